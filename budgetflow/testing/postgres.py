"""A throwaway PostgreSQL server on 127.0.0.1, for the PostgreSQL journal's tests and benchmarks.

It runs Debian's server binaries (package `postgresql`; `scripts/test_services.sh` installs it)
from a fresh data directory on a free port, trusts local connections, and is stopped and
deleted on exit. PostgreSQL refuses to run as root: as root, it runs as the `postgres` user the
package creates.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from types import TracebackType

from budgetflow.testing.load import free_port

__all__ = ["PostgresServer", "postgres_binaries"]

_USER = "budgetflow"


def postgres_binaries() -> Path | None:
    """The folder holding `initdb` and `pg_ctl`, newest major version first, if installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major, reverse=True)
    if found:
        return Path(found[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _major(path: str) -> int:
    version = Path(path).parts[-3]
    return int(version) if version.isdigit() else 0


class PostgresServer:
    """`with PostgresServer() as server:` a running server; `server.new_database()` is a URL."""

    def __init__(self) -> None:
        binaries = postgres_binaries()
        if binaries is None:
            raise FileNotFoundError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        self._bin = binaries
        self.port = free_port()
        self._root = Path(tempfile.mkdtemp(prefix="budgetflow-pg-"))
        self._data = self._root / "data"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self._root, "postgres", "postgres")

    @property
    def url(self) -> str:
        return f"postgresql://{_USER}@127.0.0.1:{self.port}/postgres"

    def __enter__(self) -> PostgresServer:
        self._run("initdb", "-D", str(self._data), "-U", _USER, "--auth=trust", "-E", "UTF8")
        try:
            self._run(
                "pg_ctl",
                *("-D", str(self._data), "-l", str(self._root / "server.log"), "-w", "-t", "60"),
                *("-o", f"-h 127.0.0.1 -p {self.port} -k {self._root} -c fsync=off"),
                "start",
            )
        except subprocess.CalledProcessError:
            log = self._root / "server.log"
            print(log.read_text() if log.exists() else "(no server log)")
            self._remove()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self._data), "-m", "immediate", "-w", "stop")
        self._remove()

    def new_database(self) -> str:
        """A URL of a new, empty database on this server."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def _run(self, program: str, *arguments: str) -> None:
        subprocess.run(
            [str(self._bin / program), *arguments],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            user="postgres" if self._as_postgres else None,
            cwd=self._root,
        )

    def _remove(self) -> None:
        shutil.rmtree(self._root, ignore_errors=True)
