from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from budgetflow.testing.postgres import PostgresServer, postgres_binaries

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on 127.0.0.1 for the whole test session. Where PostgreSQL is
    not installed the tests that need it are skipped — except under `scripts/test.sh` (CI),
    which installs it and sets BUDGETFLOW_REQUIRE_SERVICES=1, so a missing server fails."""
    if postgres_binaries() is None:
        if os.environ.get("BUDGETFLOW_REQUIRE_SERVICES") == "1":
            pytest.fail("PostgreSQL is not installed; scripts/test_services.sh installs it")
        pytest.skip("PostgreSQL is not installed (scripts/test_services.sh installs it)")
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database on the test PostgreSQL server."""
    return postgres_server.new_database()


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium for the browser tests (Playwright drives it; it downloads no browser).
    Skipped where it is not installed, failed under `scripts/test.sh`, which installs it."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("BUDGETFLOW_REQUIRE_SERVICES") == "1":
            pytest.fail("Chromium is not installed; scripts/test_services.sh installs it")
        pytest.skip("Chromium is not installed (scripts/test_services.sh installs it)")
    return path
