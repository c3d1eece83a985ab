"""The `aibudget` command: parse arguments, call one `Budget` method, render. No SQL here.

Every command loads and validates the settings first, so a bad setting stops any command at once.
Errors a user can fix exit with status 2 and a one-line message naming the option or variable.
Commands live in one module per group: `tools` (price, audio-duration, demo, verify, sweep,
db upgrade), `admin` (practice, plan, subscription, device, credit), `topup`, `keys`, `usage`,
`notifications` and `serve`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import Any, NoReturn

import typer

from aibudget.budget import Budget
from aibudget.config import Settings
from aibudget.errors import AibudgetError

app = typer.Typer(
    help="Prepaid AI budgets per customer: gate calls, price usage, charge the right pot.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def fail(message: str) -> NoReturn:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(2)


def option_name(field: str, names: Mapping[str, str] | None = None) -> str:
    """How the user typed the thing a field error is about: `--input-tokens`, or an argument (`ID`)."""
    if names and field in names:
        return names[field]
    return f"--{field.replace('_', '-')}"


def fail_on(exc: AibudgetError, names: Mapping[str, str] | None = None) -> NoReturn:
    """Exit 2 with the error's detail on one line, led by the option it is about."""
    detail = " ".join(exc.detail.split())
    if exc.field is None:
        fail(detail)
    fail(f"{option_name(exc.field, names)}: {detail.removeprefix(f'{exc.field}: ')}")


def settings(ctx: typer.Context) -> Settings:
    loaded: Settings = ctx.obj
    return loaded


@contextmanager
def open_budget(ctx: typer.Context, names: Mapping[str, str] | None = None) -> Iterator[Budget]:
    """The configured `Budget` (migrated); any `AibudgetError` inside exits 2 naming its option."""
    try:
        with Budget.open(settings=settings(ctx)) as budget:
            yield budget
    except AibudgetError as exc:
        fail_on(exc, names)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def emit_json(data: Any) -> None:
    """Indented JSON; times ISO 8601, amounts decimal strings."""
    typer.echo(json.dumps(data, indent=2, default=_plain))


def emit(data: dict[str, Any], as_json: bool) -> None:
    """One object: indented JSON, or one `key  value` line per field (None shows as nothing)."""
    if as_json:
        emit_json(data)
    else:
        width = max(len(key) for key in data)
        for key, value in data.items():
            shown = "" if value is None else _plain(value) if isinstance(value, datetime | date) else value
            typer.echo(f"{key:<{width}}  {shown}".rstrip())


def emit_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Rows as an aligned text table with a header; None shows as `-`."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        return str(_plain(value) if isinstance(value, datetime | date | Decimal) else value)

    cells = [[cell(row.get(column)) for column in columns] for row in rows]
    widths = [max([len(column), *(len(line[i]) for line in cells)]) for i, column in enumerate(columns)]
    for line in [list(columns), *cells]:
        typer.echo("  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip())


@app.callback()
def _load_settings(ctx: typer.Context) -> None:
    ctx.obj = Settings.load()


def main() -> None:
    try:
        app()
    except AibudgetError as exc:  # ConfigError from the settings callback, before any command ran
        typer.echo(f"Error: {exc.detail}", err=True)
        sys.exit(2)


# The command modules register themselves on `app`; imported last because they import the helpers.
from aibudget.cli import admin, keys, notifications, serve, tools, topup, usage  # noqa: E402

__all__ = [
    "admin", "app", "emit", "emit_json", "emit_table", "fail", "fail_on", "keys", "main", "notifications",
    "open_budget", "serve", "settings", "tools", "topup", "usage",
]  # fmt: skip
