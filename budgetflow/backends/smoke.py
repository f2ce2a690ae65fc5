"""`python -m budgetflow.backends.smoke`: load the embedded model and decode a few tokens.

Run by the setup script, so that a llama.cpp build that cannot run on this CPU is reported at
set-up, with the model's path, rather than as a crash in the first test.
"""

from __future__ import annotations

import asyncio

from budgetflow.backends.embedded import EmbeddedBackend, default_model_path
from budgetflow.types import Request, SamplingParams


async def _decode() -> str:
    async with EmbeddedBackend(threads=1) as backend:
        request = Request.from_prompt("What is 2 + 2?", sampling=SamplingParams(max_tokens=4, temperature=0))
        response = await backend.complete(request)
    return response.completions[0].text


def main() -> None:
    text = asyncio.run(_decode())
    if not text.strip():
        raise SystemExit(f"setup: the embedded model {default_model_path()} decoded nothing")
    print(f"setup: embedded model {default_model_path()} decodes ({text!r})")


if __name__ == "__main__":
    main()
