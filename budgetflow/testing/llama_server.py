"""Start and stop llama.cpp's OpenAI-compatible server (`python -m llama_cpp.server`) on 127.0.0.1.

Used by the integration tests and benchmarks as a real endpoint serving the same GGUF file as
the embedded backend. Requires the `server` extra (`llama-cpp-python[server]`).
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from budgetflow.testing.load import free_port

__all__ = ["LlamaServer", "start_llama_server", "stop_llama_server"]


@dataclass
class LlamaServer:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def start_llama_server(
    model: Path, log: Path, *, threads: int = 1, context_tokens: int = 2048, logits_all: bool = True
) -> LlamaServer:
    """Start `python -m llama_cpp.server` on a free loopback port and wait until it answers.

    `logits_all` (the server's default) keeps every position's logits, which it needs to return
    any log-probabilities: of samples, and of the prompt (`/v1/completions` with `echo`: scoring
    text). Without it both are an HTTP 500."""
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
        "--port", str(port), "--n_ctx", str(context_tokens), "--n_threads", str(threads),
        "--n_threads_batch", str(threads),
        "--verbose", "False", "--logits_all", str(logits_all),
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"llama.cpp server exited with {process.returncode}: {log.read_text()[-2000:]}"
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as reply:
                if reply.status == 200:
                    return LlamaServer(process, port)
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"llama.cpp server did not answer within 120 s: {log.read_text()[-2000:]}")


def stop_llama_server(server: LlamaServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
