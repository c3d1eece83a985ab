"""The operator commands, run as the installed console script (SPEC §9): accounts, money, keys, reports.

Each prints what was stored (`--json` for JSON); a mistake exits 2 with one line naming the option
or argument, and changes nothing.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from aibudget import Budget, Settings
from tests.api.conftest import Server, start_server, stop_server
from tests.conftest import Aibudget

NEW_COMMANDS = (
    ["practice", "put"], ["practice", "show"], ["plan", "put"], ["subscription", "put"], ["device", "bind"],
    ["device", "deactivate"], ["credit", "grant"], ["keys", "create"], ["keys", "list"], ["keys", "revoke"],
    ["usage", "report"], ["usage", "prune"], ["serve"], ["topup", "show"], ["topup", "set"],
    ["topup", "resume"], ["topup", "attempts"],
)  # fmt: skip


def open_budget(workdir: Path) -> Budget:
    """The database the commands use (`var/` under their working directory), through the library."""
    data_dir = workdir / "var"
    return Budget.open(
        f"sqlite:///{data_dir / 'aibudget.sqlite3'}", settings=Settings.load(data_dir=data_dir)
    )


def test_every_new_command_has_help_with_an_example(aibudget: Aibudget) -> None:
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda command: aibudget(*command, "--help"), NEW_COMMANDS))
    for command, done in zip(NEW_COMMANDS, runs, strict=True):
        assert (command, done.code) == (command, 0), done.stderr
        assert "Example:" in done.stdout, command


def test_a_practice_is_set_up_and_shown_with_its_money(aibudget: Aibudget) -> None:
    done = aibudget("practice", "put", "praxis-1", "--name", "Praxis Muster", "--policy", "strict", "--json")
    assert (done.code, done.stderr) == (0, "")
    assert json.loads(done.stdout) == {
        "practice_id": "praxis-1", "name": "Praxis Muster", "locale": "de-CH", "timezone": "Europe/Zurich",
        "policy": "strict", "warning_percent": 20,
    }  # fmt: skip
    assert aibudget("plan", "put", "basic", "--included-usd", "20").stdout.split() == [
        "lookup_key", "basic", "included_usd", "20.000000"
    ]  # fmt: skip
    done = aibudget(
        "subscription", "put", "sub_1", "--practice", "praxis-1", "--status", "active", "--plan", "basic",
        "--period-start", "2026-11-01T00:00:00Z", "--period-end", "1764547200", "--json",
    )  # fmt: skip
    assert done.code == 2  # the end (2025-12-01) is before the start
    assert "--period-end" in done.message
    done = aibudget(
        "subscription", "put", "sub_1", "--practice", "praxis-1", "--status", "active", "--plan", "basic",
        "--period-start", "2026-11-01T00:00:00+00:00", "--period-end", "2099-12-01T00:00:00Z", "--json",
    )  # fmt: skip
    assert done.code == 0, done.stderr
    assert json.loads(done.stdout)["current_period_start"] == 1793491200
    done = aibudget("credit", "grant", "praxis-1", "--amount-usd", "7.50", "--source", "manual",
                    "--reference", "gift-1", "--expires-at", "2099-01-01T00:00:00Z", "--json")  # fmt: skip
    assert done.code == 0, done.stderr
    grant = json.loads(done.stdout)
    assert (grant["amount_usd"], grant["remaining_usd"], grant["expires_at"]) == (
        "7.500000", "7.500000", "2099-01-01T00:00:00+00:00"
    )  # fmt: skip
    again = aibudget("credit", "grant", "praxis-1", "--amount-usd", "7.50", "--source", "manual",
                     "--reference", "gift-1", "--expires-at", "2099-01-01T00:00:00Z", "--json")  # fmt: skip
    assert json.loads(again.stdout)["grant_id"] == grant["grant_id"]  # once per reference

    done = aibudget("practice", "show", "praxis-1", "--json")
    assert done.code == 0, done.stderr
    view = json.loads(done.stdout)
    assert (view["subscription_id"], view["plan"], view["policy"]) == ("sub_1", "basic", "strict")
    assert (view["included_usd"], view["extra_credit_remaining_usd"], view["available_usd"]) == (
        "20.000000", "7.500000", "27.500000"
    )  # fmt: skip
    plain = aibudget("practice", "show", "praxis-1").stdout
    assert "available_usd               27.500000" in plain.splitlines()


def test_a_device_is_bound_to_one_practice_and_deactivated(aibudget: Aibudget, workdir: Path) -> None:
    with open_budget(workdir) as budget:
        budget.put_practice("praxis-1")
        budget.put_practice("praxis-2")
    done = aibudget("device", "bind", "laptop-7f3a", "--practice", "praxis-1", "--user-key", "dr-a", "--json")
    assert done.code == 0, done.stderr
    bound = json.loads(done.stdout)
    assert (bound["practice_id"], bound["user_key"], bound["active"]) == ("praxis-1", "dr-a", True)
    assert "laptop-7f3a" not in done.stdout  # only the keyed hash's suffix is shown
    other = aibudget("device", "bind", "laptop-7f3a", "--practice", "praxis-2")
    assert (other.code, other.stdout) == (2, "")
    assert other.message.startswith("Error: DEVICE_ID:")
    done = aibudget("device", "deactivate", "laptop-7f3a", "--json")
    assert done.code == 0, done.stderr
    assert json.loads(done.stdout)["active"] is False


@pytest.mark.parametrize(
    ("command", "named"),
    [
        (["practice", "put", "p1", "--policy", "bogus"], "--policy"),
        (["practice", "put", "p1", "--locale", "xx-YY"], "--locale"),
        (["practice", "put", "bad id!"], "ID"),
        (["practice", "show", "nobody"], "ID"),
        (["plan", "put", "basic", "--included-usd", "1.2345678"], "--included-usd"),
        (["plan", "put", "basic", "--included-usd", "nan"], "--included-usd"),
        (["subscription", "put", "sub_1", "--practice", "nobody", "--status", "active"], "--practice"),
        (["subscription", "put", "sub_1", "--practice", "p1", "--status", "active",
          "--period-start", "2026-12-01T00:00:00"], "--period-start"),
        (["device", "deactivate", "never-bound"], "DEVICE_ID"),
        (["device", "bind", "d1", "--practice", "nobody"], "--practice"),
        (["credit", "grant", "p1", "--amount-usd", "-1", "--source", "manual", "--reference", "r"],
         "--amount-usd"),
        (["credit", "grant", "p1", "--amount-usd", "1", "--source", "gift", "--reference", "r"], "--source"),
        (["credit", "grant", "p1", "--amount-usd", "1", "--source", "manual", "--reference", "r",
          "--expires-at", "2001-01-01T00:00:00Z"], "--expires-at"),
        (["keys", "create", "--role", "root"], "--role"),
        (["keys", "create", "--role", "practice"], "--practice"),
        (["keys", "revoke", "0123456789abcdef"], "KEY_ID"),
        (["usage", "report", "p1", "--since", "yesterday"], "--since"),
        (["usage", "report", "p1", "--group-by", "week"], "--group-by"),
        (["usage", "report", "nobody"], "PRACTICE"),
    ],
)  # fmt: skip
def test_a_mistake_exits_2_naming_the_option(aibudget: Aibudget, command: list[str], named: str) -> None:
    done = aibudget(*command)
    assert (done.code, done.stdout) == (2, "")
    assert named in done.message
    assert "Traceback" not in done.stderr


def test_usage_report_renders_events_and_totals(aibudget: Aibudget, workdir: Path) -> None:
    with open_budget(workdir) as budget:
        budget.put_practice("praxis-1")
        budget.put_subscription("sub_1", practice_id="praxis-1", status="active")
        for n, model in enumerate(["gpt-4o-mini", "gpt-4o-mini", "whisper-1"]):
            budget.settle(
                practice_id="praxis-1", request_id=f"r{n}", model=model, operation="letter",
                input_tokens=1000, output_tokens=500, audio_seconds=60 * (model == "whisper-1"),
            )  # fmt: skip
    done = aibudget("usage", "report", "praxis-1", "--group-by", "model", "--format", "csv")
    assert done.code == 0, done.stderr
    rows = {row["model"]: row for row in csv.DictReader(io.StringIO(done.stdout))}
    assert (rows["gpt-4o-mini"]["calls"], rows["whisper-1"]["calls"]) == ("2", "1")
    assert rows["gpt-4o-mini"]["cost_usd"] == "0.000900"  # 2 x (1000 x 0.15 + 500 x 0.60) / 1M
    done = aibudget("usage", "report", "praxis-1", "--format", "json")
    assert [row["request_id"] for row in json.loads(done.stdout)["rows"]] == ["r2", "r1", "r0"]
    table = aibudget("usage", "report", "praxis-1", "--group-by", "operation").stdout.splitlines()
    assert table[0].split()[:3] == ["operation", "calls", "success"]
    assert table[1].split()[:3] == ["letter", "3", "3"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    started = start_server(tmp_path / "server" / "var")
    try:
        yield started
    finally:
        stop_server(started)


def test_keys_create_prints_a_key_once_that_works_until_revoked(aibudget: Aibudget, server: Server) -> None:
    with server.budget() as budget:
        budget.put_practice("praxis-1")
    env = {"AIBUDGET_DATA_DIR": str(server.data_dir)}
    done = aibudget(
        "keys", "create", "--role", "practice", "--practice", "praxis-1", "--label", "desk", **env
    )
    assert done.code == 0, done.stderr
    fields = dict(line.split(maxsplit=1) for line in done.stdout.splitlines() if len(line.split()) > 1)
    key, key_id = fields["key"], fields["key_id"]
    assert "only this once" in done.stderr

    def budget_read(presented: str) -> httpx.Response:
        with server.client(presented) as client:
            return client.get("/v1/budget")

    assert budget_read(key).status_code == 200
    listed = aibudget("keys", "list", "--json", **env)
    assert [(k["key_id"], k["role"], k["practice_id"], k["label"]) for k in json.loads(listed.stdout)] == [
        (key_id, "practice", "praxis-1", "desk")
    ]  # fmt: skip
    assert key not in listed.stdout  # the key itself is never shown again
    revoked = aibudget("keys", "revoke", key_id, "--json", **env)
    assert revoked.code == 0, revoked.stderr
    assert json.loads(revoked.stdout)["revoked_at"] is not None
    assert budget_read(key).status_code == 401


def test_usage_prune_removes_old_events_and_the_books_still_balance(
    aibudget: Aibudget, workdir: Path
) -> None:
    data_dir = workdir / "var"
    url, settings = f"sqlite:///{data_dir / 'aibudget.sqlite3'}", Settings.load(data_dir=data_dir)
    january = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    with Budget.open(url, settings=settings, clock=lambda: january) as budget:
        budget.put_practice("praxis-1")
        budget.put_subscription("sub_1", practice_id="praxis-1", status="active")
        for n in range(2):
            budget.settle(practice_id="praxis-1", request_id=f"r{n}", model="gpt-4o-mini", input_tokens=1000)
    refused = aibudget("usage", "prune", "--before", "2026-13-01")
    assert refused.code == 2
    assert refused.message.startswith("Error: --before: '2026-13-01' is not an ISO date")
    done = aibudget("usage", "prune", "--before", "2026-02-01")
    assert done.code == 0, done.stderr
    assert done.stdout.startswith("removed 2 usage events and 0 closed authorizations before 2026-02-01")
    assert aibudget("verify").code == 0
    with Budget.open(url, settings=settings, clock=lambda: january) as budget:
        assert not budget.usage_report("praxis-1").rows
        assert budget.snapshot("praxis-1").used_micros == 2 * 150  # 1000 input tokens at 0.15 USD per 1M
