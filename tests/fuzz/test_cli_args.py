"""Fuzzing the command line (SPEC §9): any arguments end in a result or a usage error, never a crash.

The Typer app runs in-process (`typer.testing.CliRunner`) over one SQLite database per module that
already holds a practice with a plan, a subscription and some usage. Each command gets its known
options in any order and any subset, with values that are sometimes right and often not: unicode,
control characters, empty and very long strings, negative, huge and non-decimal numbers, floats for
money, times without a zone, option-like values, unknown options and stray arguments. Whatever it
gets, a command exits 0, or 2 with an `Error` message or its help (`verify` may exit 1), raises nothing but
`SystemExit`, and never prints a traceback; afterwards the books still balance.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer.main
import typer.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from aibudget import Budget, Settings
from aibudget.cli import app

PRACTICE = "fuzz-p1"
bounded = settings(max_examples=50, deadline=None)


@dataclass(frozen=True)
class Cli:
    runner: CliRunner
    env: dict[str, str]
    data_dir: Path

    def budget(self) -> Budget:
        return Budget.open(self.env["AIBUDGET_DATABASE_URL"], settings=Settings.load(data_dir=self.data_dir))


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    """The runner over a database with one practice in use. Typer's runner rebuilds the click command
    from the app on every call (two thirds of a call's time); built once here, as a process does."""
    data_dir = tmp_path_factory.mktemp("cli") / "var"
    url = f"sqlite:///{data_dir / 'aibudget.sqlite3'}"
    env = {
        "AIBUDGET_DATA_DIR": str(data_dir),
        "AIBUDGET_DATABASE_URL": url,
        "COLUMNS": "200",
        "NO_COLOR": "1",
    }
    found = Cli(CliRunner(env=env), env, data_dir)
    with found.budget() as budget:
        now = int(time.time())
        budget.put_practice(PRACTICE, name="Praxis Fuzz")
        budget.put_plan("fuzz-basic", included_usd="5")
        budget.put_subscription(
            "sub_fuzz_1", practice_id=PRACTICE, plan="fuzz-basic", status="active",
            current_period_start=now - 86_400, current_period_end=now + 29 * 86_400,
        )  # fmt: skip
        budget.grant_credit(PRACTICE, amount_usd="2", source="manual", reference="fuzz-gift")
        for n in range(3):
            budget.settle(practice_id=PRACTICE, request_id=f"r{n}", model="gpt-4o-mini", input_tokens=1000)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(typer.testing, "_get_command", functools.cache(typer.main.get_command))
        yield found
    with found.budget() as budget:
        assert budget.verify() == []


# argv cannot carry NUL; everything else can reach a command
fuzzy_text = st.one_of(
    st.text(st.characters(exclude_characters="\x00"), max_size=30),
    st.text(st.characters(codec="ascii", exclude_characters="\x00"), min_size=1, max_size=12),
    st.sampled_from(["", " ", "-", "--", "--json", "-h", "\t\n", "ü" * 300, "x" * 5000, "💸", "\u202e"]),
)
fuzzy_int = st.one_of(
    st.integers(-5, 200).map(str),
    st.integers().map(str),
    st.sampled_from(["1e3", "0x10", "1_000", " 7", "+3", "-0", "١٢", "²", "9" * 40, "NaN"]),
)
fuzzy_usd = st.one_of(
    st.decimals(-1000, 10**10, places=2, allow_nan=False).map(str),
    st.decimals(allow_nan=True).map(str),
    st.floats().map(repr),
    st.integers().map(str),
    st.sampled_from(["0", "20", "7.50", "0.0000001", "1e9", "1E+10", "inf", "-inf", "nan", "1,50", "$5"]),
    st.sampled_from(["1_000", "+5", ".5", "5.", "-0", " 7.50 ", "\uff15", "\u0665", "5\u00a0", "9" * 400]),
)
fuzzy_time = st.one_of(
    st.integers(-(10**12), 10**13).map(str),
    st.datetimes().map(lambda moment: moment.isoformat()),
    st.dates().map(str),
    st.sampled_from(["2026-12-01T00:00:00Z", "2026-12-01T00:00:00+01:00", "2026-13-45", "yesterday", "0"]),
)
any_value = fuzzy_text | fuzzy_int | fuzzy_usd | fuzzy_time


def choice(*options: str) -> st.SearchStrategy[str]:
    return st.sampled_from(options) | fuzzy_text


PRACTICE_ID = st.sampled_from([PRACTICE, "fuzz-p2"]) | fuzzy_text

# command -> (positional arguments, {option: values; None for a flag})
Options = dict[str, st.SearchStrategy[str] | None]
COMMANDS: dict[tuple[str, ...], tuple[list[st.SearchStrategy[str]], Options]] = {
    ("practice", "put"): (
        [PRACTICE_ID],
        {
            "--name": fuzzy_text, "--locale": choice("de-CH", "fr-CH", "en", "xx-YY"),
            "--timezone": choice("Europe/Zurich", "UTC", "Mars/Olympus"),
            "--policy": choice("strict", "allow_last_call"), "--warning-percent": fuzzy_int, "--json": None,
        },
    ),
    ("practice", "show"): ([PRACTICE_ID], {"--json": None}),
    ("plan", "put"): ([choice("fuzz-basic", "fuzz-pro")], {"--included-usd": fuzzy_usd, "--json": None}),
    ("subscription", "put"): (
        [choice("sub_fuzz_1", "sub_fuzz_2")],
        {
            "--practice": PRACTICE_ID, "--status": choice("active", "canceled", "past_due"),
            "--plan": choice("fuzz-basic", "nope"), "--period-start": fuzzy_time, "--period-end": fuzzy_time,
            "--customer-id": fuzzy_text, "--customer-email": fuzzy_text, "--updated-at": fuzzy_time,
            "--json": None,
        },
    ),
    ("device", "bind"): ([fuzzy_text], {"--practice": PRACTICE_ID, "--user-key": fuzzy_text, "--json": None}),
    ("credit", "grant"): (
        [PRACTICE_ID],
        {
            "--amount-usd": fuzzy_usd, "--source": choice("manual", "promo", "purchase", "gift"),
            "--reference": fuzzy_text, "--expires-at": fuzzy_time, "--priority": fuzzy_int, "--json": None,
        },
    ),
    ("topup", "set"): (
        [PRACTICE_ID],
        {
            "--package-usd": fuzzy_usd, "--monthly-max-count": fuzzy_int, "--monthly-max-usd": fuzzy_usd,
            "--enabled": None, "--disabled": None, "--threshold-usd": fuzzy_usd,
            "--threshold-percent": fuzzy_int, "--json": None,
        },
    ),
    ("topup", "show"): ([PRACTICE_ID], {"--json": None}),
    ("topup", "pause"): ([PRACTICE_ID], {"--json": None}),
    ("topup", "resume"): ([PRACTICE_ID], {"--json": None}),
    ("topup", "attempts"): ([PRACTICE_ID], {"--limit": fuzzy_int, "--json": None}),
    ("keys", "create"): (
        [],
        {"--role": choice("admin", "service", "practice"), "--practice": PRACTICE_ID, "--label": fuzzy_text,
         "--json": None},
    ),
    ("keys", "revoke"): ([fuzzy_text], {"--json": None}),
    ("keys", "list"): ([], {"--json": None}),
    ("usage", "report"): (
        [PRACTICE_ID],
        {
            "--since": fuzzy_time | fuzzy_text, "--until": fuzzy_time | fuzzy_text,
            "--group-by": choice("day", "model", "operation"), "--limit": fuzzy_int,
            "--format": choice("table", "csv", "json"), "--status": choice("success", "error", "blocked"),
            "--model": fuzzy_text, "--operation": fuzzy_text,
        },
    ),
    ("usage", "prune"): ([], {"--before": fuzzy_time | fuzzy_text}),
    ("price",): (
        [choice("gpt-4o-mini", "whisper-1", "openai/gpt-4o-2024-05-13")],
        {
            "--input-tokens": fuzzy_int, "--cached-input-tokens": fuzzy_int, "--output-tokens": fuzzy_int,
            "--input-audio-tokens": fuzzy_int, "--audio-seconds": fuzzy_usd, "--json": None,
        },
    ),
    ("notifications", "list"): (
        [],
        {"--practice": PRACTICE_ID, "--status": choice("pending", "delivered", "failed"),
         "--limit": fuzzy_int, "--format": choice("table", "json")},
    ),
    ("notifications", "resend"): ([fuzzy_text], {"--practice": PRACTICE_ID}),
    ("verify",): ([], {}),
    ("sweep",): ([], {}),
}  # fmt: skip


@st.composite
def command_lines(draw: st.DrawFn, command: tuple[str, ...]) -> list[str]:
    """The command, its arguments (sometimes too few or too many) and a random subset of its
    options in random order, sometimes repeated, sometimes without a value, sometimes unknown."""
    positional, options = COMMANDS[command]
    words = [draw(strategy) for strategy in positional]
    if draw(st.integers(0, 9)) == 0:
        words = words[:-1] if words else [draw(fuzzy_text)]
    chosen = draw(st.lists(st.sampled_from(sorted(options)), max_size=len(options) + 1)) if options else []
    for option in chosen:
        values = options[option]
        words.append(option)
        if values is not None and draw(st.integers(0, 19)):
            words.append(draw(values))
    if draw(st.integers(0, 9)) == 0:
        words.insert(draw(st.integers(0, len(words))), draw(st.sampled_from(["--bogus", "-x", "extra"])))
    return [*command, *words]


def assert_exits_cleanly(cli: Cli, args: list[str]) -> None:
    result = cli.runner.invoke(app, args, catch_exceptions=True)
    allowed = {0, 1, 2} if args[:1] == ["verify"] else {0, 2}
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        args,
        result.exc_info,
        result.output,
    )
    assert result.exit_code in allowed, (args, result.exit_code, result.output)
    assert "Traceback" not in result.output, (args, result.output)
    if result.exit_code == 2:  # a message naming the mistake, or the help of a group given no command
        assert "Error" in result.stderr or "Usage:" in result.stdout, (args, result.output)


@pytest.mark.parametrize("command", sorted(COMMANDS), ids=" ".join)
def test_any_arguments_exit_cleanly(cli: Cli, command: tuple[str, ...]) -> None:
    @bounded
    @given(args=command_lines(command))
    def run(args: list[str]) -> None:
        assert_exits_cleanly(cli, args)

    run()


@pytest.mark.parametrize("args", [["keys", "revoke", "\ud800"], ["notifications", "resend", "\ud800"]])
def test_an_id_that_is_not_text_at_all_exits_2(cli: Cli, args: list[str]) -> None:
    """A lone surrogate (what an argument of undecodable bytes becomes) names nothing: exit 2."""
    assert_exits_cleanly(cli, args)
    assert cli.runner.invoke(app, args).exit_code == 2


@bounded
@given(
    args=st.lists(
        any_value | st.sampled_from(sorted({word for command in COMMANDS for word in command})), max_size=6
    )
)
def test_any_words_at_all_exit_cleanly(cli: Cli, args: list[str]) -> None:
    if args[:1] in (["serve"], ["demo"], ["audio-duration"], ["db"]):
        return  # they start a server, fill a database or read a file: covered elsewhere
    assert_exits_cleanly(cli, args)
