"""`aibudget price`, run as an operator runs it: the installed console script, in a clean directory
and environment, one process per command.

Also the regression test for an old defect: a bad budget setting used to crash at its first use,
deep inside a command; now any command stops at start, exit status 2, naming the variable and value.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Aibudget


def test_prices_a_call_as_json(aibudget: Aibudget) -> None:
    done = aibudget(
        "price", "gpt-4o-mini", "--input-tokens", "1000000", "--output-tokens", "1000000", "--json"
    )
    assert (done.code, done.stderr) == (0, "")
    priced = json.loads(done.stdout)
    assert {"model", "priced_as", "source", "version", "cost_usd"} <= priced.keys()
    assert priced["cost_usd"] == "0.750000"  # a decimal string, never a float
    assert (priced["model"], priced["priced_as"], priced["source"]) == (
        "gpt-4o-mini",
        "gpt-4o-mini",
        "catalog",
    )
    assert priced["version"] == "genai-prices 0.2.3"


def test_plain_output_is_one_readable_line_per_field(aibudget: Aibudget) -> None:
    done = aibudget("price", "whisper-1", "--audio-seconds", "60")
    assert (done.code, done.stderr) == (0, "")
    fields = dict(line.split(maxsplit=1) for line in done.stdout.splitlines())
    assert fields["cost_usd"] == "0.006000"
    assert fields["audio_billing"] == "seconds"
    assert fields["model"] == fields["priced_as"] == "whisper-1"
    assert "{" not in done.stdout


def test_an_unknown_model_is_priced_at_the_fallback(aibudget: Aibudget) -> None:
    done = aibudget("price", "praxis-llm-v9", "--input-tokens", "1000000", "--json")
    assert done.code == 0, done.stderr
    priced = json.loads(done.stdout)
    assert (priced["source"], priced["cost_usd"]) == ("fallback", "5.000000")


def test_the_refuse_policy_names_the_unknown_model(aibudget: Aibudget) -> None:
    done = aibudget("price", "praxis-llm-v9", "--input-tokens", "10", AIBUDGET_UNKNOWN_MODEL="refuse")
    assert (done.code, done.stdout) == (2, "")
    assert "praxis-llm-v9" in done.message
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--input-tokens", "-1"], "--input-tokens"),
        (["--input-tokens", "1", "--cached-input-tokens", "5"], "--cached-input-tokens"),
        (["--input-tokens", "1", "--input-audio-tokens", "5"], "--input-audio-tokens"),
        (["--audio-seconds", "nan"], "--audio-seconds"),
        (["--audio-seconds", "-1"], "--audio-seconds"),
        (["--output-tokens", "1.5"], "--output-tokens"),
    ],
)
def test_invalid_usage_names_the_option(aibudget: Aibudget, args: list[str], option: str) -> None:
    done = aibudget("price", "gpt-4o-mini", *args)
    assert (done.code, done.stdout) == (2, "")
    assert option in done.message
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AIBUDGET_DEFAULT_INCLUDED_USD", "20 USD"),
        ("AIBUDGET_DEFAULT_INCLUDED_USD", "inf"),
        ("AIBUDGET_DEFAULT_INCLUDED_USD", "nan"),
        ("AIBUDGET_DEFAULT_INCLUDED_USD", "-5"),
        ("AIBUDGET_UNKNOWN_MODEL", "maybe"),
        ("AIBUDGET_PRICE_OVERRIDES", "/nonexistent"),
    ],
)
def test_a_bad_setting_stops_any_command_at_start(aibudget: Aibudget, variable: str, value: str) -> None:
    # `price` never reads the budget setting: only validation at start can catch it.
    done = aibudget("price", "gpt-4o-mini", "--input-tokens", "10", **{variable: value})
    assert (done.code, done.stdout) == (2, "")
    assert variable in done.message
    assert value in done.message
    assert "Traceback" not in done.stderr


def test_a_bad_setting_in_aibudget_toml_stops_start_up(aibudget: Aibudget, workdir: Path) -> None:
    (workdir / "aibudget.toml").write_text('default_included_usd = "twenty"\n')
    done = aibudget("price", "gpt-4o-mini", "--input-tokens", "10")
    assert (done.code, done.stdout) == (2, "")
    assert "DEFAULT_INCLUDED_USD" in done.message.upper()
    assert "twenty" in done.message
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", [["audio-duration", "missing.wav"], ["db", "upgrade"]])
def test_a_bad_setting_stops_other_commands_before_they_do_anything(
    aibudget: Aibudget, workdir: Path, command: list[str]
) -> None:
    done = aibudget(*command, AIBUDGET_DEFAULT_INCLUDED_USD="20 USD")
    assert (done.code, done.stdout) == (2, "")
    assert "AIBUDGET_DEFAULT_INCLUDED_USD='20 USD'" in done.message
    assert list(workdir.iterdir()) == []  # no database, no secret key: nothing ran
