"""`budgetflow keys create / list / revoke` and `budgetflow serve`'s refusals before it binds."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from budgetflow.cli import app
from budgetflow.server.keys import KeyStore

runner = CliRunner()


def test_keys_are_created_listed_and_revoked(tmp_path: Path) -> None:
    store = tmp_path / "keys.sqlite"
    created = runner.invoke(
        app, ["keys", "create", "ci", "--budget-tokens", "5000", "--period", "hour", "--keys", str(store)]
    )
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip()
    key = KeyStore(store).authenticate(secret)
    assert key is not None and key.budget_tokens == 5000 and key.period_seconds == 3600
    listed = runner.invoke(app, ["keys", "list", "--keys", str(store)])
    assert listed.exit_code == 0 and key.id in listed.stdout and "5,000 tok" in listed.stdout
    assert secret not in listed.stdout
    revoked = runner.invoke(app, ["keys", "revoke", key.id, "--keys", str(store)])
    assert revoked.exit_code == 0 and KeyStore(store).authenticate(secret) is None
    again = runner.invoke(app, ["keys", "revoke", key.id, "--keys", str(store)])
    assert again.exit_code == 2 and "no live key" in again.output


def test_bad_key_options_name_the_flag(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["keys", "create", "x", "--period", "fortnight", "--keys", str(tmp_path / "k.sqlite")]
    )
    assert result.exit_code == 2 and "--period" in result.output


def test_serve_refuses_an_open_public_bind_and_a_bad_upstream() -> None:
    public = runner.invoke(app, ["serve", "--host", "0.0.0.0"])
    assert public.exit_code == 2 and "--keys" in public.output
    upstream = runner.invoke(app, ["serve", "--upstream", "localhost:8080"])
    assert upstream.exit_code == 2 and "--upstream" in upstream.output
    no_model = runner.invoke(app, ["serve", "--upstream", "http://127.0.0.1:9/v1"])
    assert no_model.exit_code == 2 and "--model" in no_model.output
