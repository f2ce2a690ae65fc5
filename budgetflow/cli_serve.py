"""`budgetflow serve` (the OpenAI-compatible server) and `budgetflow keys` (its API keys)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from budgetflow.cli_help import PanelledCommand, PanelledGroup
from budgetflow.cli_options import ApiKeyEnvOpt, ModelPathOpt, PriceOpt, ThreadsOpt, TimeoutOpt, parse_prices
from budgetflow.cli_output import console, exit_for, stdout
from budgetflow.errors import BudgetflowError, ConfigError
from budgetflow.runtime.endpoints import EndpointSpec, open_backend
from budgetflow.server.app import ServerSettings, create_app
from budgetflow.server.keys import KeyStore, parse_period

__all__ = ["keys_app", "serve_command"]

KEYS_DEFAULT = Path("budgetflow-keys.sqlite")
KeysOpt = Annotated[Path, typer.Option("--keys", help="The SQLite key store.")]

keys_app = typer.Typer(
    cls=PanelledGroup,
    help="Create, list and revoke the server's API keys.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def serve_command(
    upstream: Annotated[
        str, typer.Option(help="'embedded' (the shipped model) or an OpenAI-compatible base URL.")
    ] = "embedded",
    model: Annotated[str | None, typer.Option(help="The upstream model (needed with a URL).")] = None,
    host: Annotated[
        str, typer.Option(help="Address to bind; anything but loopback needs --keys.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free port).")] = 8000,
    keys: Annotated[
        Path | None, typer.Option("--keys", help="SQLite key store: every request then needs a key.")
    ] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="max_tokens when a request sets none.")] = 512,
    upstream_concurrency: Annotated[
        int, typer.Option(min=1, help="Upstream requests in flight at once.")
    ] = 64,
    request_budget: Annotated[
        int, typer.Option(min=1, help="Most tokens one request may spend (strategies included).")
    ] = 262_144,
    price: PriceOpt = None,
    api_key_env: ApiKeyEnvOpt = "OPENAI_API_KEY",
    timeout: TimeoutOpt = 120.0,
    model_path: ModelPathOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Serve an OpenAI-compatible API in front of UPSTREAM, with strategies by model name
    (vote-8/embedded, best_of_n-4/M, early_stop-16/M, adaptive/M, single/M)."""
    try:
        spec = _upstream_spec(upstream, model, api_key_env, timeout, model_path, threads)
        _check_bind(host, keys)
        settings = ServerSettings(
            upstream_model=spec.model or "embedded",
            default_max_tokens=max_tokens,
            upstream_concurrency=upstream_concurrency,
            request_budget_cap=request_budget,
            prices=parse_prices(price or []),
        )
        store = _open_store(keys)
        with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_serve(spec, settings, store, host, port))
    except BudgetflowError as exc:
        raise exit_for(exc) from exc


async def _serve(
    spec: EndpointSpec, settings: ServerSettings, store: KeyStore | None, host: str, port: int
) -> None:
    from aiohttp import web

    app = create_app(open_backend(spec), settings, store)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound = runner.addresses[0][1]
    auth = "API keys required" if store is not None else "no key store: requests are not authenticated"
    url = f"http://{host}:{bound}/v1"
    console.print(f"budgetflow serving {settings.upstream_model} on {url} ({auth})", soft_wrap=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C still raises KeyboardInterrupt
            loop.add_signal_handler(signal_number, stopping.set)
    try:
        await stopping.wait()
        console.print("budgetflow serve: stopping (requests in flight are cancelled and settled)")
    finally:
        await runner.cleanup()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (not on Windows), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _upstream_spec(
    upstream: str, model: str | None, key_env: str, timeout: float, path: Path | None, threads: int | None
) -> EndpointSpec:
    if upstream == "embedded":
        return EndpointSpec(kind="embedded", model_path=path, threads=threads)
    if not upstream.startswith(("http://", "https://")):
        raise ConfigError(f"--upstream must be 'embedded' or an http(s):// base URL, got {upstream!r}")
    if not model:
        raise ConfigError("--upstream URL needs --model (the upstream's model name)")
    return EndpointSpec(kind="openai", base_url=upstream, model=model, api_key_env=key_env, timeout=timeout)


def _check_bind(host: str, keys: Path | None) -> None:
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and keys is None:
        raise ConfigError(
            f"--host {host} is reachable from other machines: give --keys so requests need a key"
        )


def _open_store(path: Path | None) -> KeyStore | None:
    if path is None:
        return None
    store = KeyStore(path)
    recovered = store.recover()
    if recovered:
        console.print(f"{recovered} reservation(s) left open by a stopped server were charged in full")
    return store


@keys_app.command("create", cls=PanelledCommand)
def create_key(
    name: Annotated[str, typer.Argument(help="A label for the key (who or what uses it).")],
    budget_tokens: Annotated[int | None, typer.Option(min=0, help="Tokens per period.")] = None,
    budget_dollars: Annotated[
        float | None, typer.Option(min=0.0, help="Dollars per period (needs --price).")
    ] = None,
    period: Annotated[str, typer.Option(help="hour, day, week, month, total, or seconds.")] = "day",
    rpm: Annotated[float | None, typer.Option(min=0.001, help="Requests per minute.")] = None,
    keys: KeysOpt = KEYS_DEFAULT,
) -> None:
    """Create a key and print it (the only time it is shown)."""
    try:
        store = KeyStore(keys)
        secret = store.create(
            name,
            budget_tokens=budget_tokens,
            budget_dollars=budget_dollars,
            period_seconds=parse_period(period),
            requests_per_minute=rpm,
        )
    except BudgetflowError as exc:
        raise exit_for(exc) from exc
    stdout.print(secret, highlight=False)


@keys_app.command("list", cls=PanelledCommand)
def list_keys(keys: KeysOpt = KEYS_DEFAULT) -> None:
    """List keys with their budgets and this period's spend (never the secrets)."""
    try:
        infos = KeyStore(keys).list()
    except BudgetflowError as exc:
        raise exit_for(exc) from exc
    table = Table("id", "name", "budget", "spent", "period", "rpm", "state")
    for info in infos:
        budget = [f"{info.budget_tokens:,} tok" if info.budget_tokens is not None else ""]
        if info.budget_dollars is not None:
            budget.append(f"${info.budget_dollars:.4f}")
        table.add_row(
            info.id,
            info.name,
            " ".join(b for b in budget if b) or "unlimited",
            f"{info.spent_tokens:,} tok",
            f"{info.period_seconds} s" if info.period_seconds else "total",
            "" if info.requests_per_minute is None else f"{info.requests_per_minute:g}",
            "revoked" if info.revoked is not None else "live",
        )
    stdout.print(table)


@keys_app.command("revoke", cls=PanelledCommand)
def revoke_key(
    key_id: Annotated[str, typer.Argument(help="The key's id (from 'keys list').")],
    keys: KeysOpt = KEYS_DEFAULT,
) -> None:
    """Revoke a key: requests with it get 401 from then on."""
    try:
        revoked = KeyStore(keys).revoke(key_id)
    except BudgetflowError as exc:
        raise exit_for(exc) from exc
    if not revoked:
        raise exit_for(ConfigError(f"no live key with id {key_id!r} in {keys}"))
    stdout.print(f"revoked {key_id}")
