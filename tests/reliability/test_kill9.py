"""SPEC §5 across a crash: a `kill -9` of the server under mixed load loses no settle, charges none
twice, and leaves the books balanced and no hold behind, on SQLite and on PostgreSQL.

One real `aibudget serve --workers 1` (a single process: the pid started is the one serving) runs on
a fresh database of the engine under test, with holds that live HOLD_TTL_S seconds and a sweeper
every SWEEP_S. THREADS client threads talk real HTTP to one practice, whose small included budget
runs out early so that most calls are paid from a grant. Each call has its own request id and is one
of MIX: authorized then settled; authorized then voided; settled without an authorization;
authorized and walked away from (the sweeper must release that hold). Each thread writes down every
settle acknowledged (201, with its event id and cost) and every settle sent that got no answer.

Once the server has answered KILL_AFTER requests, the test looks for the moment that matters most:
it stops the server (SIGSTOP), lets the answers already sent arrive, and reads the ledger. When a
settle the server committed still awaits its answer, the server gets SIGKILL right there, stopped,
as if `kill -9` had landed between the commit and the answer; otherwise it goes on (SIGCONT) and the
test looks again a little later. Each thread stops at its first connection error. A new server
starts on the same database and data directory, and every unanswered settle is sent again with the
same request id and body: the dead server either committed it (the replay answers 200 with the
first event; it must, for those found committed) or not (201, posted now); either way it is charged
once, and a second replay answers 200 with the same event. Then:

- G1: the settled events in the ledger are exactly the acknowledged and the replayed settles, one
  event each, with the event id and cost that each answer named;
- G3: `verify()` finds every cached balance equal to the ledger, and the period's used amount is the
  sum of those events (the included budget spent, the grant paying the rest);
- G4: no hold is active once the TTL and one sweep interval have passed since the restarted server
  could sweep (polled, with a deadline): those walked away from, and those whose authorize or void
  died with the server, expired;
- no answer before the kill was a 5xx (each was the 200 or 201 expected), and neither server
  logged a traceback.

Each call is a gpt-4o-mini letter (1000 input and at most 500 output tokens estimated: 450 micro-USD
held); its real output, 0-500 tokens, is drawn from its request id.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from aibudget import Budget
from aibudget.money import parse_usd
from aibudget.store import tables
from tests.api.conftest import Server, stop_server
from tests.factories import open_practice, rows, usage_events
from tests.test_many_workers import LETTER, start_workers

PRACTICE = "crash"
THREADS = 6
HOLD_TTL_S, SWEEP_S = 2, 1
SHORT_HOLDS = {"AIBUDGET_HOLD_TTL_SECONDS": str(HOLD_TTL_S), "AIBUDGET_SWEEP_INTERVAL_SECONDS": str(SWEEP_S)}
KILL_AFTER = 600  # answers before the kill, and at least MIN_LOAD_S of load
MIN_LOAD_S = 1.5
LOAD_LIMIT_S = 20.0  # to reach KILL_AFTER answers and catch an answer lost
DELIVERY_S = 0.05  # for answers already sent by a stopped server to reach their threads
SLACK_S = 3.0  # on top of TTL + sweep interval: one sweep pass and the polling
CALLS_PER_THREAD = 10_000  # a bound only: the kill ends the loops long before
HELD, VOIDED, BARE, WALKED_AWAY = "authorize, settle", "authorize, void", "settle", "authorize"
MIX = (HELD, HELD, HELD, HELD, VOIDED, BARE, BARE, WALKED_AWAY)

Acknowledged = tuple[int, int]  # event id, cost in micro-USD


@dataclass
class Told:
    """What one client thread was told."""

    settled: dict[str, Acknowledged] = field(default_factory=dict)  # by request id
    unanswered: list[dict[str, Any]] = field(default_factory=list)  # bodies of settles sent, no answer
    statuses: Counter[int] = field(default_factory=Counter)


class Wire:
    """Across the threads: how many answers came, which settles await theirs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.answers = 0
        self._settling: set[str] = set()

    def answered(self) -> None:
        with self._lock:
            self.answers += 1

    @contextmanager
    def settle(self, request_id: str) -> Iterator[None]:
        with self._lock:
            self._settling.add(request_id)
        try:
            yield
        finally:
            with self._lock:
                self._settling.discard(request_id)

    def settling(self) -> list[str]:
        with self._lock:
            return sorted(self._settling)


def acknowledged(response: httpx.Response) -> Acknowledged:
    event = response.json()
    return event["event_id"], parse_usd(event["cost_usd"], field="cost_usd")


def post(client: httpx.Client, path: str, body: dict[str, Any], told: Told, wire: Wire) -> httpx.Response:
    response = client.post(path, json=body)
    told.statuses[response.status_code] += 1
    wire.answered()
    return response


def call(client: httpx.Client, kind: str, request_id: str, told: Told, wire: Wire) -> None:
    """One call of the MIX; a connection error (the kill) propagates."""
    ids = {"practice_id": PRACTICE, "request_id": request_id}
    if kind != BARE:
        held = post(client, "/v1/authorizations", LETTER | ids, told, wire)
        assert held.status_code == 201, held.text
    if kind == VOIDED:
        voided = post(client, f"/v1/authorizations/{request_id}/void", {"practice_id": PRACTICE}, told, wire)
        assert voided.status_code == 200, voided.text
        assert voided.json()["status"] in {"voided", "expired"}, voided.text
    elif kind in {HELD, BARE}:
        output_tokens = random.Random(request_id).randint(0, 500)
        body = ids | {"model": "gpt-4o-mini", "usage": {"input_tokens": 1000, "output_tokens": output_tokens}}
        try:
            with wire.settle(request_id):
                posted = post(client, "/v1/usage", body, told, wire)
        except httpx.TransportError:
            told.unanswered.append(body)
            raise
        assert posted.status_code == 201, posted.text
        told.settled[request_id] = acknowledged(posted)


def load(server: Server, key: str, thread: int, wire: Wire) -> Told:
    """One client thread: calls of the MIX until its first connection error."""
    told = Told()
    with server.client(key) as client:
        for n in range(CALLS_PER_THREAD):
            try:
                call(client, MIX[(thread + n) % len(MIX)], f"t{thread}-{n}", told, wire)
            except httpx.TransportError:
                break
    return told


def lost_answers(server: Server, books: Budget, wire: Wire) -> list[str]:
    """Stops the server and looks for settles it committed whose answers it has not sent; when there
    are some it stays stopped (for the kill), else it goes on."""
    os.kill(server.process.pid, signal.SIGSTOP)
    time.sleep(DELIVERY_S)  # answers it had sent reach their threads
    settlements = tables.settlements.c
    waiting = settlements.request_id.in_(wire.settling())
    lost = [
        row.request_id
        for row in rows(books, tables.settlements, settlements.practice_id == PRACTICE, waiting)
    ]
    if not lost:
        os.kill(server.process.pid, signal.SIGCONT)
    return lost


@dataclass(frozen=True)
class Crash:
    told: list[Told]  # by thread
    answers: int  # before the kill
    lost: list[str]  # settles committed by the killed server, their answers never sent


def kill_under_load(server: Server, books: Budget, key: str) -> Crash:
    """Runs the threads and kills the server once it has answered KILL_AFTER requests and has lost
    an answer (or a bound is reached, for the assertions to report)."""
    wire, lost = Wire(), list[str]()
    with ThreadPoolExecutor(THREADS) as pool:
        threads = [pool.submit(load, server, key, thread, wire) for thread in range(THREADS)]
        started = time.monotonic()
        try:
            while not lost and time.monotonic() - started < LOAD_LIMIT_S:
                if any(thread.done() for thread in threads):
                    break
                if wire.answers >= KILL_AFTER and time.monotonic() - started >= MIN_LOAD_S:
                    lost = lost_answers(server, books, wire)
                time.sleep(0.01)
        finally:
            answers = wire.answers
            os.kill(server.process.pid, signal.SIGKILL)
        return Crash([thread.result() for thread in threads], answers, lost)


def replay(server: Server, key: str, bodies: list[dict[str, Any]]) -> dict[str, httpx.Response]:
    """Sends each settle again, twice: the first replay posts it or finds it, the second finds it."""
    replayed = {}
    with server.client(key) as client:
        for body in bodies:
            first = client.post("/v1/usage", json=body)
            assert first.status_code in {200, 201}, first.text
            again = client.post("/v1/usage", json=body)
            assert again.status_code == 200, again.text
            assert acknowledged(again) == acknowledged(first)
            replayed[body["request_id"]] = first
    return replayed


def holds(books: Budget, status: str) -> list[str]:
    """The request ids of the practice's authorizations in `status`."""
    authorizations = tables.authorizations
    where = (authorizations.c.practice_id == PRACTICE, authorizations.c.status == status)
    return [hold.request_id for hold in rows(books, authorizations, *where)]


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """The servers a test starts, stopped afterwards (a killed one is gone already)."""
    started: list[Server] = []
    yield started
    for server in started:
        stop_server(server)


@pytest.mark.timeout(120)
def test_a_killed_server_loses_no_settle_charges_none_twice_and_leaks_no_hold(
    server_database: str | None, tmp_path: Path, servers: list[Server]
) -> None:
    data_dir = tmp_path / "var"
    database_url = server_database or f"sqlite:///{data_dir / 'aibudget.sqlite3'}"
    servers.append(start_workers(data_dir, database_url, 1, **SHORT_HOLDS))
    with servers[0].budget() as books:
        now = int(time.time())
        open_practice(books, PRACTICE, included_usd="0.02", current_period_start=now - 86_400,
                      current_period_end=now + 29 * 86_400)  # fmt: skip
        books.grant_credit(PRACTICE, amount_usd="50", source="purchase", reference="pi-crash")
        key = books.create_key(role="service", label="tests/reliability/test_kill9.py")[1]

        crash = kill_under_load(servers[0], books, key)

        assert servers[0].process.wait(timeout=10) == -signal.SIGKILL
        with pytest.raises(httpx.ConnectError):  # the process killed was the one serving
            httpx.get(f"{servers[0].url}/healthz", timeout=2)
        killed_at, killed_log = time.monotonic(), servers[0].logs()
        assert crash.answers >= KILL_AFTER, f"only {crash.answers} answers within {LOAD_LIMIT_S} s"
        assert crash.lost, f"no answer was lost to a kill within {LOAD_LIMIT_S} s"
        statuses = sum((thread.statuses for thread in crash.told), Counter[int]())
        assert set(statuses) <= {200, 201}, statuses
        unanswered = [body for thread in crash.told for body in thread.unanswered]

        servers.append(start_workers(data_dir, database_url, 1, **SHORT_HOLDS))
        restarted_at = time.monotonic()
        replayed = replay(servers[1], key, unanswered)
        found = {request_id for request_id, answer in replayed.items() if answer.status_code == 200}
        assert set(crash.lost) <= found  # the dead server's commits: replays answer its first result

        events = tables.usage_events.c
        ledger = usage_events(books, events.practice_id == PRACTICE, events.status == "success")
        twice = [request_id for request_id, n in Counter(e.request_id for e in ledger).items() if n > 1]
        assert twice == []
        settled = {request_id: ack for thread in crash.told for request_id, ack in thread.settled.items()}
        settled |= {request_id: acknowledged(answer) for request_id, answer in replayed.items()}
        assert {event.request_id: (event.event_id, event.cost_micros) for event in ledger} == settled

        assert books.verify() == []
        used, snapshot = sum(event.cost_micros for event in ledger), books.snapshot(PRACTICE)
        assert (snapshot.used_micros, snapshot.included_remaining_micros) == (used, 0)

        deadline = max(restarted_at, killed_at + HOLD_TTL_S) + SWEEP_S + SLACK_S
        while holds(books, "active") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert holds(books, "active") == []
        assert holds(books, "expired"), "the sweeper released nothing"
        assert books.snapshot(PRACTICE).held_micros == 0
        assert books.verify() == []

    assert "Traceback" not in killed_log
    assert "Traceback" not in servers[1].logs()
