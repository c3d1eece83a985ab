"""`aibudget keys create|list|revoke`: API keys, shown once and stored only as a hash."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from aibudget.auth.service import ApiKey
from aibudget.cli import app, emit, emit_json, emit_table, open_budget

keys_app = typer.Typer(help="API keys: admin, service (your backend) or practice.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

COLUMNS = ("key_id", "role", "practice_id", "label", "created_at", "revoked_at")


def _key(key: ApiKey) -> dict[str, Any]:
    return {column: getattr(key, column) for column in COLUMNS}


@keys_app.command(
    "create",
    epilog="Example: aibudget keys create --role practice --practice praxis-muster --label 'desktop app'",
)
def create(
    ctx: typer.Context,
    role: Annotated[str, typer.Option(help="admin, service or practice.")],
    practice: Annotated[str | None, typer.Option(help="The practice of a practice key.")] = None,
    label: Annotated[str | None, typer.Option(help="What the key is for.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create an API key and print it. It is shown only this once: store it now."""
    with open_budget(ctx, {"practice_id": "--practice"}) as budget:
        key, secret = budget.create_key(role=role, practice_id=practice, label=label)
    emit({**_key(key), "key": secret}, as_json)
    typer.echo("The key is shown only this once; only its hash is stored.", err=True)


@keys_app.command("list", epilog="Example: aibudget keys list --json")
def list_keys(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every API key with its role, practice and revocation time (never the key itself)."""
    with open_budget(ctx) as budget:
        keys = [_key(key) for key in budget.api_keys()]
    if as_json:
        emit_json(keys)
    elif keys:
        emit_table(keys, COLUMNS)
    else:
        typer.echo("no API keys yet: aibudget keys create --role admin")


@keys_app.command("revoke", epilog="Example: aibudget keys revoke 3f9a0c1b2d4e5f60")
def revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID", help="As `keys list` shows it.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Revoke key KEY_ID at once; revoking again keeps the first revocation time."""
    with open_budget(ctx, {"key_id": "KEY_ID"}) as budget:
        key = budget.revoke_key(key_id)
    emit(_key(key), as_json)
