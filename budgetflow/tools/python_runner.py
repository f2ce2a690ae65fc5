"""A Python runner tool: the model's code runs in a separate process with limits.

The child is a fresh interpreter (`python -I`: no user site, no environment variables read)
whose bootstrap, before the model's code runs, sets `RLIMIT_CPU` (CPU seconds) and `RLIMIT_AS`
(address space) and installs an audit hook (PEP 578; it cannot be removed from Python) that
refuses every socket, every new process and `ctypes`: no network, no way around the limits.
The parent kills the child at the wall-clock limit. What the code printed (stdout, then
stderr) is the tool's result, cut to `max_output` characters.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from budgetflow.tools.library import ToolSpec, tool_error

__all__ = ["PythonRunner"]

_BOOTSTRAP: Final = r"""
import resource, sys
cpu, memory = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
_REFUSED = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
            "os.fork", "os.forkpty", "pty.", "ctypes.", "resource.setrlimit", "sys.addaudithook")
def _guard(event, args):
    if event.startswith(_REFUSED):
        raise PermissionError(f"{event} is not allowed in the python tool")
sys.addaudithook(_guard)
del resource, _guard
source = sys.stdin.read()
namespace = {"__name__": "__main__"}
exec(compile(source, "<tool>", "exec"), namespace)
"""


@dataclass(frozen=True, slots=True)
class PythonRunner:
    """Runs `code` in a limited child process: `timeout_seconds` of wall clock (then killed),
    `cpu_seconds` of CPU, `memory_bytes` of address space, no network, no subprocesses."""

    timeout_seconds: float = 5.0
    cpu_seconds: int = 5
    memory_bytes: int = 512 * 1024 * 1024
    max_output: int = 4000
    spec: ToolSpec = field(
        default_factory=lambda: ToolSpec.one_argument(
            "python",
            "Run a short Python program and return what it prints. No network, no files outside "
            "a scratch space, a few seconds of CPU.",
            "code",
            "the program; print the result",
        )
    )

    async def run(self, arguments: Mapping[str, Any]) -> str:
        code = arguments.get("code")
        if not isinstance(code, str) or not code.strip():
            return tool_error("python needs a 'code' string")
        return await self.execute(code)

    async def execute(self, code: str) -> str:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-c", _BOOTSTRAP, str(self.cpu_seconds), str(self.memory_bytes),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"PYTHONIOENCODING": "utf-8"},
        )  # fmt: skip
        try:
            stdout, stderr = await asyncio.wait_for(
                process.communicate(code.encode("utf-8")), timeout=self.timeout_seconds
            )
        except TimeoutError:
            return tool_error(f"the program ran past its {self.timeout_seconds:g} s limit and was stopped")
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        return self._result(process.returncode, stdout, stderr)

    def _result(self, status: int | None, stdout: bytes, stderr: bytes) -> str:
        out = stdout.decode("utf-8", "replace")
        err = stderr.decode("utf-8", "replace")
        if status is not None and status < 0:  # killed by a signal: SIGXCPU at the CPU limit
            return tool_error(f"the program was stopped by signal {-status} (CPU limit {self.cpu_seconds} s)")
        if "MemoryError" in err:
            err = f"MemoryError: the program went over its memory limit ({self.memory_bytes >> 20} MiB)"
        text = out if status == 0 else f"{out}{_last_lines(err)}"
        if len(text) > self.max_output:
            text = text[: self.max_output] + f"\n[… cut at {self.max_output} characters]"
        return text if status == 0 else tool_error(text.strip() or f"exit status {status}")


def _last_lines(text: str, count: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-count:])
