"""The other commands of the foundation, run as the installed console script."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.conftest import Aibudget
from tests.pricing.audio_fixtures import write_wav


def test_audio_duration_reads_the_container(aibudget: Aibudget, workdir: Path) -> None:
    write_wav(workdir / "dictation.wav")
    done = aibudget("audio-duration", "dictation.wav", "--json")
    assert (done.code, done.stderr) == (0, "")
    assert json.loads(done.stdout) == {"seconds": "7.300", "method": "container", "format": "wav"}


def test_audio_duration_of_a_non_audio_file_is_a_flagged_estimate(aibudget: Aibudget, workdir: Path) -> None:
    (workdir / "notes.txt").write_bytes(b"not audio at all " * 250)  # 4,250 bytes
    done = aibudget("audio-duration", "notes.txt", "--json")
    assert done.code == 0, done.stderr
    assert json.loads(done.stdout) == {"seconds": "1.063", "method": "heuristic", "format": "unknown"}


def test_audio_duration_of_an_empty_or_missing_file_exits_2(aibudget: Aibudget, workdir: Path) -> None:
    (workdir / "empty.webm").write_bytes(b"")
    for name, words in (("empty.webm", "empty"), ("missing.wav", "does not exist")):
        done = aibudget("audio-duration", name)
        assert (done.code, done.stdout) == (2, "")
        assert name in done.stderr
        assert words in done.stderr
        assert "Traceback" not in done.stderr


def test_db_upgrade_creates_the_default_sqlite_file(aibudget: Aibudget, workdir: Path) -> None:
    done = aibudget("db", "upgrade")
    assert done.code == 0, done.stderr
    assert "up to date" in done.stdout
    with sqlite3.connect(workdir / "var" / "aibudget.sqlite3") as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"practices", "periods", "usage_events", "credit_grants", "authorizations"} <= tables


def test_the_demo_fills_a_month_and_running_it_again_changes_nothing(aibudget: Aibudget) -> None:
    first = aibudget("demo")
    assert first.code == 0, first.stderr
    assert "KI-Kontingent:" in first.stdout
    assert "the books balance" in first.stdout
    again = aibudget("demo")
    assert again.code == 0, again.stderr
    assert "replays charged nothing" in again.stdout
    operator_view = [line for line in first.stdout.splitlines() if "_usd" in line]
    assert operator_view == [line for line in again.stdout.splitlines() if "_usd" in line]


def test_verify_exits_1_with_the_differences_when_the_books_do_not_balance(
    aibudget: Aibudget, workdir: Path
) -> None:
    assert aibudget("demo").code == 0
    done = aibudget("verify")
    assert (done.code, done.stderr) == (0, "")
    with sqlite3.connect(workdir / "var" / "aibudget.sqlite3") as connection:
        connection.execute("UPDATE balances SET credit_micros = credit_micros + 7")
    done = aibudget("verify")
    assert done.code == 1
    assert "balances[praxis-demo].credit_micros" in done.stderr
    assert "Traceback" not in done.stderr


def test_sweep_reports_released_holds(aibudget: Aibudget) -> None:
    done = aibudget("sweep")
    assert done.code == 0, done.stderr
    assert "0 expired hold(s) released" in done.stdout


def test_a_database_that_cannot_be_opened_exits_2_naming_it(aibudget: Aibudget, workdir: Path) -> None:
    (workdir / "a-file").write_text("not a folder")
    (workdir / "garbage.sqlite3").write_text("not a database")
    assert aibudget("db", "upgrade").code == 0
    with sqlite3.connect(workdir / "var" / "aibudget.sqlite3") as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    absent = "there is no database"  # what verify says first where there is no database file
    cases = {  # URL: what opening it says, what verify says
        f"sqlite:///{workdir / 'a-file' / 'aibudget.sqlite3'}": ("cannot be made", absent),
        f"sqlite:///{workdir}": ("unavailable", absent),  # a folder
        f"sqlite:///{workdir / 'garbage.sqlite3'}": ("file is not a database",) * 2,
        f"sqlite:///{workdir / 'var' / 'aibudget.sqlite3'}": ("newer version",) * 2,
        "postgresql+psycopg://aibudget:secret@127.0.0.1:1/aibudget": ("Connection refused",) * 2,
    }
    for url, (opening, verifying) in cases.items():
        for command, words in ((["keys", "list"], opening), (["db", "upgrade"], opening),
                               (["verify"], verifying)):  # fmt: skip
            done = aibudget(*command, AIBUDGET_DATABASE_URL=url)
            assert (done.code, done.stdout) == (2, ""), (command, url, done.stderr)
            assert "AIBUDGET_DATABASE_URL" in done.stderr, done.stderr
            assert words in done.stderr, done.stderr
            assert "secret" not in done.stderr
            assert "Traceback" not in done.stderr, done.stderr


def test_verify_of_a_database_that_is_not_there_exits_2_and_makes_none(
    aibudget: Aibudget, workdir: Path
) -> None:
    mistyped = workdir / "typo" / "aibudget.sqlite3"
    done = aibudget("verify", AIBUDGET_DATABASE_URL=f"sqlite:///{mistyped}")
    assert (done.code, done.stdout) == (2, "")
    assert "no database" in done.stderr
    assert str(mistyped) in done.stderr
    assert not mistyped.parent.exists()


def test_every_command_has_help_with_an_example(aibudget: Aibudget) -> None:
    for command in (["price"], ["audio-duration"], ["db", "upgrade"], ["demo"], ["verify"], ["sweep"]):
        done = aibudget(*command, "--help")
        assert done.code == 0, done.stderr
        assert "Example:" in done.stdout
