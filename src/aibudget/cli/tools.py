"""Commands that work on prices, audio files and the database as a whole: `price`, `audio-duration`,
`demo`, `verify`, `sweep`, `db upgrade`."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated

import typer

from aibudget.cli import app, emit, fail, fail_on, settings
from aibudget.errors import AibudgetError
from aibudget.pricing.audio import read_duration
from aibudget.pricing.catalog import PriceCatalog, Usage

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _seconds(value: str) -> Decimal:
    try:
        seconds = Decimal(value)
    except InvalidOperation:
        raise typer.BadParameter(f"{value!r} is not a number of seconds") from None
    if not seconds.is_finite() or seconds < 0:
        raise typer.BadParameter(f"{value!r} must be a finite number >= 0")
    return seconds


@app.command(epilog="Example: aibudget price gpt-4o-mini --input-tokens 1200 --output-tokens 600 --json")
def price(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model as sent to the provider, e.g. gpt-4o-mini.")],
    input_tokens: Annotated[
        int, typer.Option(min=0, help="All input tokens, cached and audio included.")
    ] = 0,
    cached_input_tokens: Annotated[int, typer.Option(min=0, help="Input tokens read from cache.")] = 0,
    output_tokens: Annotated[int, typer.Option(min=0, help="Output tokens, reasoning included.")] = 0,
    input_audio_tokens: Annotated[int, typer.Option(min=0, help="Input tokens that were audio.")] = 0,
    audio_seconds: Annotated[
        Decimal, typer.Option(parser=_seconds, help="Audio duration, for per-minute models.")
    ] = Decimal(0),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Price one call of MODEL with the given usage."""
    try:
        usage = Usage(input_tokens, cached_input_tokens, output_tokens, input_audio_tokens, audio_seconds)
        priced = PriceCatalog.from_settings(settings(ctx)).price(model, usage)
    except AibudgetError as exc:
        fail_on(exc, {"model": "MODEL"})
    emit(
        {
            "model": priced.model,
            "priced_as": priced.priced_as,
            "source": priced.source,
            "version": priced.version,
            "audio_billing": priced.audio_billing,
            "cost_usd": str(priced.cost_usd),
        },
        as_json,
    )


@app.command("audio-duration", epilog="Example: aibudget audio-duration dictation.webm --json")
def audio_duration(
    file: Annotated[Path, typer.Argument(help="An audio file: wav, mp3, m4a, ogg/opus, flac, webm.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Read the duration of an audio FILE the way uploads are charged."""
    try:
        duration = read_duration(file)
    except AibudgetError as exc:
        fail(f"{file}: {exc.detail}")
    emit({"seconds": str(duration.seconds), "method": duration.method, "format": duration.format}, as_json)


@app.command(epilog="Example: aibudget demo")
def demo(ctx: typer.Context) -> None:
    """Fill a demo practice with a month of realistic traffic and print its views (`make run`)."""
    from aibudget.demo import run

    run(settings(ctx), typer.echo)


@app.command(epilog="Example: aibudget verify")
def verify(ctx: typer.Context) -> None:
    """Recompute every balance from the ledger; exit 1 with the differences if the books do not balance."""
    from aibudget.budget import Budget

    missing = _missing_sqlite_file(settings(ctx).resolved_database_url)
    if missing is not None:  # opening would make an empty database, whose books balance
        fail(f"AIBUDGET_DATABASE_URL: there is no database at {missing!r}: nothing to verify")
    with Budget.open(settings=settings(ctx)) as budget:
        problems = budget.verify()
    if problems:
        typer.echo(f"the books do not balance: {len(problems)} difference(s)", err=True)
        for problem in problems:
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(1)
    typer.echo("the books balance: every cached balance matches the ledger")


def _missing_sqlite_file(database_url: str) -> str | None:
    """The path of the SQLite file `database_url` names, if there is no such file."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(database_url)
    except ArgumentError:  # not a URL: opening it says so
        return None
    path = url.database or ""
    if url.get_backend_name() != "sqlite" or "uri" in url.query or Path(path).is_file():
        return None
    return path


@app.command(epilog="Example: aibudget sweep")
def sweep(ctx: typer.Context) -> None:
    """Release holds past their TTL, retire expired credit and record calls a stopped server admitted
    without a hold (fail-open); the server also does this on its own."""
    from aibudget.budget import Budget

    with Budget.open(settings=settings(ctx)) as budget:
        expired = budget.sweep()
    typer.echo(f"{expired} expired hold(s) released")


@db_app.command(
    "upgrade", epilog="Example: AIBUDGET_DATABASE_URL=sqlite:///var/aibudget.sqlite3 aibudget db upgrade"
)
def db_upgrade(ctx: typer.Context) -> None:
    """Create or migrate the database schema to the newest version."""
    from aibudget.store.engine import open_engine

    url = settings(ctx).resolved_database_url
    open_engine(url, migrate=True, sqlite_synchronous=settings(ctx).sqlite_synchronous).dispose()
    typer.echo(f"database at {url} is up to date")
