"""`aibudget serve`: the HTTP API under uvicorn, in one or more worker processes.

Before any worker starts, the database is migrated once here; each worker then opens its own
`Budget` (whose migration finds nothing to do; workers starting together take turns under the
migration lock) and runs its own sweeper. On the first start — no admin key in the database and
`AIBUDGET_ADMIN_KEY` unset — an admin key is created and printed this once.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from typing import Annotated

import typer

from aibudget.budget import Budget
from aibudget.cli import app, fail, open_budget

APP = "aibudget.api.app:create_app"


def _check_port(host: str, port: int) -> None:
    """Fail now, before a key is made, when the address cannot be served (port taken, unknown host)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind(infos[0][4])
    except OSError as exc:
        fail(f"--port: cannot listen on {host}:{port}: {exc.strerror or exc}")


def _url(host: str, port: int) -> str:
    """The address to show: a wildcard host is reached at the loopback address."""
    shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def _first_start_key(budget: Budget) -> str | None:
    """An admin key, made when none is usable: no active admin key stored, none configured."""
    if budget.settings.admin_key is not None:
        return None
    if any(key.role == "admin" and key.revoked_at is None for key in budget.api_keys()):
        return None
    return budget.create_key(role="admin", label="made by the first `aibudget serve`")[1]


@app.command(epilog="Example: aibudget serve --host 0.0.0.0 --port 8000 --workers 2")
def serve(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 for every interface.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Worker processes, each with its own sweeper.")
    ] = 1,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs) until Ctrl-C; migrate the database first."""
    # the server's imports, not every command's
    import uvicorn

    from aibudget.api.observability import MULTIPROC_ENV, log_config

    _check_port(host, port)
    with open_budget(ctx) as budget:  # migrates, once, before any worker opens it
        created = _first_start_key(budget)
    url = _url(host, port)
    if created:
        typer.echo("First start: an admin API key was made. It is shown only this once, store it now:")
        typer.echo(f"  {created}")
        typer.echo(f"Send it as 'Authorization: Bearer <key>', e.g. from the API docs at {url}/docs,")
        typer.echo(f"or sign in with it to the dashboard at {url}/admin")
    typer.echo(f"aibudget serves {url} (API docs: {url}/docs, dashboard: {url}/admin); Ctrl-C stops it")
    metrics_dir = None
    if workers > 1 and not os.environ.get(MULTIPROC_ENV):
        # each worker counts in files here, and /metrics in any worker sums them all
        metrics_dir = os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="aibudget-metrics-")
    try:
        uvicorn.run(
            APP, factory=True, host=host, port=port, workers=workers, log_config=log_config(),
            access_log=False, server_header=False,
        )  # fmt: skip
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
