"""SPEC §12 across processes: `aibudget` servers on one PostgreSQL database spend the same money.

Two real servers (uvicorn, each its own process and connection pool, the same server secret) serve
one fresh PostgreSQL database; for the hot practice, so does one `aibudget serve --workers 4`.
16 client threads talk real HTTP, each with one connection to each server (to the single server:
two connections, which its workers share). Each call is authorized over one connection and settled
(or voided) over the other, so a hold made by one process is closed by another, and some settles are
sent again over the first. What must hold (SPEC §5), per practice:

- G1: every acknowledged settle is in the ledger exactly once, and a replay on the other server
  answers 200 with the first event;
- G2: in `strict` mode the posted cost never exceeds the funding (included + grants), to the micro-USD;
- G3: `verify()` finds every cached balance equal to the ledger afterwards;
- G4: no hold is left active;
- no answer is ever a 5xx.

Each call is a gpt-4o-mini letter estimated at 1000 input and at most 500 output tokens:
1000 x 0.15/1M + 500 x 0.60/1M = 450 micro-USD held. Its real output is 0-500 tokens, so the real
cost (150-450 micro-USD) never exceeds the estimate.

The bound is only worth something if the money really ran out, so the threads drive every practice
until it is exhausted, and show it: a refusal seen while other calls were in flight on the practice
may be due to their holds, so the thread that saw it calls that practice again *alone* (a `Lane`
lets its other calls finish and keeps new ones out). A refusal then, with nothing else held, means
less than one estimate was left; nobody calls that practice again. Loops are bounded by count and by
time; the budgets are sized to run out well within both.
"""

from __future__ import annotations

import os
import random
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from aibudget import Budget, Settings
from aibudget.money import parse_usd
from aibudget.store import tables
from tests.api.conftest import Server, free_port, start_server, stop_server
from tests.databases import PostgresServer
from tests.factories import rows, usage_events

SCRIPT = Path(sys.executable).parent / "aibudget"
TWO_SERVERS, FOUR_WORKERS = "two servers", "aibudget serve --workers 4"
ESTIMATE_MICROS = 450
THREADS = 16
CALLS_PER_THREAD = 600
SECONDS_PER_TEST = 50.0
WAIT_S = 30.0  # for a lane's other calls to finish: a few HTTP round trips, bounded all the same
VOID_EVERY = 13  # every 13th held call is voided (the provider call failed) instead of settled
REPLAY_EVERY = 7  # every 7th settle is sent again, to the server that authorized it
LETTER = {"operation": "letter", "model": "gpt-4o-mini",
          "estimate": {"input_tokens": 1000, "max_output_tokens": 500}}  # fmt: skip


@dataclass(frozen=True)
class Settled:
    practice_id: str
    request_id: str
    event_id: int
    cost_micros: int
    connection: int  # which of the thread's two connections acknowledged it


@dataclass
class Spent:
    """What one client thread was told."""

    settled: list[Settled] = field(default_factory=list)
    voided: list[tuple[str, str]] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)


class Lane:
    """One practice's traffic: calls run side by side, except a probe after a refusal, which runs alone."""

    def __init__(self, practice_id: str, funding_micros: int) -> None:
        self.practice_id = practice_id
        self.funding_micros = funding_micros
        self.exhausted = False
        self._changed = threading.Condition()
        self._in_flight = 0
        self._probing = False

    def enter(self, *, alone: bool) -> bool:
        """Start a call (False: the practice is exhausted, make none); `alone` waits for the others."""
        with self._changed:
            ready = self._changed.wait_for(lambda: self.exhausted or not self._probing, timeout=WAIT_S)
            assert ready, f"{self.practice_id}: a probe did not finish within {WAIT_S} s"
            if self.exhausted:
                return False
            if alone:
                self._probing = True
                quiet = self._changed.wait_for(lambda: self._in_flight == 0, timeout=WAIT_S)
                assert quiet, f"{self.practice_id}: calls in flight did not finish within {WAIT_S} s"
            self._in_flight += 1
            return True

    def leave(self, *, alone: bool, refused: bool) -> None:
        with self._changed:
            self._in_flight -= 1
            if alone:
                self._probing = False
                self.exhausted = refused
            self._changed.notify_all()


@dataclass(frozen=True)
class Deployment:
    """Servers that share one database and one server secret, as behind a load balancer."""

    servers: tuple[Server, ...]
    database_url: str
    secret_key: str

    def budget(self, data_dir: Path) -> Budget:
        """The same database through the library, with the servers' secret."""
        settings = Settings.load(data_dir=data_dir, secret_key=self.secret_key)
        return Budget.open(self.database_url, settings=settings)


def start_workers(data_dir: Path, database_url: str, workers: int, **env: str) -> Server:
    """`aibudget serve --workers N`: it migrates once, then N worker processes serve one port."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port, admin_key = free_port(), secrets.token_urlsafe(32)
    clean = {name: value for name, value in os.environ.items() if not name.startswith("AIBUDGET_")}
    clean |= {"AIBUDGET_DATA_DIR": str(data_dir), "AIBUDGET_ADMIN_KEY": admin_key,
              "AIBUDGET_DATABASE_URL": database_url, **env}  # fmt: skip
    log_path = data_dir / "server.log"
    command = [str(SCRIPT), "serve", "--port", str(port), "--workers", str(workers)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=clean, cwd=data_dir, stdout=log, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", admin_key, data_dir, process, log_path, database_url)
    deadline = time.monotonic() + 60
    while server.logs().count("Application startup complete.") < workers:  # each worker logs it once
        if process.poll() is not None:
            raise RuntimeError(f"aibudget serve exited with {process.returncode}:\n{server.logs()}")
        if time.monotonic() > deadline:
            stop_server(server)
            raise RuntimeError(f"{workers} workers did not start within 60 s:\n{server.logs()}")
        time.sleep(0.1)
    return server


@pytest.fixture(scope="module")
def deployment(
    request: pytest.FixtureRequest, postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """TWO_SERVERS (each its own data directory) or FOUR_WORKERS, on one fresh database."""
    url, secret = postgres.create_database(), secrets.token_urlsafe(32)
    started: list[Server] = []
    try:
        if request.param == TWO_SERVERS:
            for name in ("a", "b"):
                data_dir = tmp_path_factory.mktemp(f"server-{name}") / "var"
                started.append(start_server(data_dir, url, AIBUDGET_SECRET_KEY=secret))
        else:
            data_dir = tmp_path_factory.mktemp("workers") / "var"
            started.append(start_workers(data_dir, url, 4, AIBUDGET_SECRET_KEY=secret))
        yield Deployment(tuple(started), url, secret)
    finally:
        for server in started:
            stop_server(server)
        postgres.drop_database(url)


@pytest.fixture
def books(deployment: Deployment, tmp_path: Path) -> Iterator[Budget]:
    with deployment.budget(tmp_path / "var") as budget:
        yield budget


def open_practice(budget: Budget, practice_id: str, *, included_usd: str, grant_usd: str | None) -> Lane:
    """A strict practice with an active subscription including `included_usd` now, and maybe a grant."""
    now = int(time.time())
    budget.put_plan(f"plan-{included_usd}", included_usd=included_usd)
    budget.put_practice(practice_id, name="Praxis Viele", policy="strict")
    budget.put_subscription(f"sub-{practice_id}", practice_id=practice_id, plan=f"plan-{included_usd}",
                            status="active", current_period_start=now - 86_400,
                            current_period_end=now + 29 * 86_400)  # fmt: skip
    funding = parse_usd(included_usd, field="included_usd")
    if grant_usd is not None:
        budget.grant_credit(
            practice_id, amount_usd=grant_usd, source="purchase", reference=f"pi-{practice_id}"
        )
        funding += parse_usd(grant_usd, field="grant_usd")
    return Lane(practice_id, funding)


def call(clients: list[httpx.Client], lane: Lane, request_id: str, turn: int, spent: Spent) -> bool:
    """Authorize on one server, then settle (or void) on the other; True when refused."""
    first, second = turn % 2, (turn + 1) % 2
    practice = {"practice_id": lane.practice_id, "request_id": request_id}
    held = clients[first].post("/v1/authorizations", json=LETTER | practice)
    spent.statuses[held.status_code] += 1
    if held.status_code == 402:
        assert held.json()["error_code"] == "AI_BUDGET_EXCEEDED", held.text
        return True
    assert held.status_code == 201, held.text
    assert parse_usd(held.json()["held_usd"], field="held_usd") == ESTIMATE_MICROS  # strict: all or nothing
    if turn % VOID_EVERY == 0:
        voided = clients[second].post(
            f"/v1/authorizations/{request_id}/void", json={"practice_id": lane.practice_id}
        )
        spent.statuses[voided.status_code] += 1
        assert (voided.status_code, voided.json()["status"]) == (200, "voided"), voided.text
        spent.voided.append((lane.practice_id, request_id))
        return False
    output_tokens = random.Random(request_id).randint(0, 500)
    usage = practice | {
        "model": "gpt-4o-mini",
        "usage": {"input_tokens": 1000, "output_tokens": output_tokens},
    }
    posted = clients[second].post("/v1/usage", json=usage)
    spent.statuses[posted.status_code] += 1
    assert posted.status_code == 201, posted.text
    event = posted.json()
    cost = parse_usd(event["cost_usd"], field="cost_usd")
    spent.settled.append(Settled(lane.practice_id, request_id, event["event_id"], cost, second))
    if turn % REPLAY_EVERY == 0:
        again = clients[first].post("/v1/usage", json=usage)
        spent.statuses[again.status_code] += 1
        assert again.status_code == 200, again.text
        assert (again.json()["event_id"], again.json()["cost_usd"]) == (event["event_id"], event["cost_usd"])
    return False


def spend(deployment: Deployment, key: str, lanes: list[Lane], thread: int, deadline: float) -> Spent:
    """One client thread: calls on random practices still open until every one is exhausted."""
    rng, spent = random.Random(thread), Spent()
    servers = deployment.servers
    clients = [servers[n % len(servers)].client(key) for n in range(2)]  # one to each server, if two
    probe: Lane | None = None  # refused among others: the next call there runs alone
    try:
        for n in range(CALLS_PER_THREAD):
            open_lanes = [lane for lane in lanes if not lane.exhausted]
            if not open_lanes or time.monotonic() > deadline:
                break
            lane, alone = (probe, True) if probe is not None else (rng.choice(open_lanes), False)
            probe = None
            if not lane.enter(alone=alone):
                continue
            refused = False
            try:
                refused = call(clients, lane, f"t{thread}-{n}", thread + n, spent)
            finally:
                lane.leave(alone=alone, refused=refused)
            if refused and not alone:
                probe = lane
    finally:
        for client in clients:
            client.close()
    return spent


def drive(deployment: Deployment, books: Budget, lanes: list[Lane]) -> list[Spent]:
    """THREADS threads, released at once, spend the lanes' practices through both servers."""
    key = books.create_key(role="service", label="tests/test_many_workers.py")[1]
    start = threading.Barrier(THREADS)
    deadline = time.monotonic() + SECONDS_PER_TEST

    def run(thread: int) -> Spent:
        start.wait(timeout=WAIT_S)
        return spend(deployment, key, lanes, thread, deadline)

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(run, range(THREADS)))


def assert_books_hold(books: Budget, lanes: list[Lane], spent: list[Spent]) -> None:
    """G1-G4 and no 5xx, for every practice of `lanes` (see the module docstring)."""
    statuses = sum((thread.statuses for thread in spent), Counter[int]())
    assert set(statuses) <= {200, 201, 402}, statuses
    settled = [call for thread in spent for call in thread.settled]
    assert {call.connection for call in settled} == {0, 1}  # both servers (connections) settled calls
    practice_ids = [lane.practice_id for lane in lanes]
    in_practices = tables.usage_events.c.practice_id.in_(practice_ids)

    ledger = usage_events(books, in_practices, tables.usage_events.c.status == "success")
    per_request = Counter((event.practice_id, event.request_id) for event in ledger)
    assert set(per_request.values()) == {1}
    assert set(per_request) == {(call.practice_id, call.request_id) for call in settled}
    assert {event.event_id: event.cost_micros for event in ledger} == {
        call.event_id: call.cost_micros for call in settled
    }

    holds = rows(books, tables.authorizations, tables.authorizations.c.practice_id.in_(practice_ids))
    assert [hold.request_id for hold in holds if hold.status == "active"] == []
    voided = {(hold.practice_id, hold.request_id) for hold in holds if hold.status == "voided"}
    assert voided == {call for thread in spent for call in thread.voided}

    posted = Counter[str]()
    for event in ledger:
        posted[event.practice_id] += event.cost_micros
    for lane in lanes:
        assert lane.exhausted, f"{lane.practice_id}: the loops ended before its money ran out"
        assert posted[lane.practice_id] <= lane.funding_micros, (lane.practice_id, posted[lane.practice_id])
        snapshot = books.snapshot(lane.practice_id)
        spent_and_held = (snapshot.used_micros, snapshot.overage_micros, snapshot.held_micros)
        assert spent_and_held == (posted[lane.practice_id], 0, 0), lane.practice_id
        left = snapshot.included_remaining_micros + snapshot.extra_credit_remaining_micros
        assert left == lane.funding_micros - posted[lane.practice_id], lane.practice_id
        assert left < ESTIMATE_MICROS, lane.practice_id  # exhausted: not even one more call fits
    assert books.verify() == []


@pytest.mark.parametrize("deployment", [TWO_SERVERS, FOUR_WORKERS], indirect=True)
def test_processes_spend_one_strict_practice_no_further_than_its_funding(
    deployment: Deployment, books: Budget
) -> None:
    lane = open_practice(books, "hot", included_usd="0.15", grant_usd="0.05")

    spent = drive(deployment, books, [lane])

    settled = [call for thread in spent for call in thread.settled]
    assert len(settled) >= lane.funding_micros // ESTIMATE_MICROS  # every call fit until the money ran out
    assert_books_hold(books, [lane], spent)


@pytest.mark.parametrize("deployment", [TWO_SERVERS], indirect=True)
def test_two_servers_spend_a_hundred_strict_practices_each_no_further_than_its_funding(
    deployment: Deployment, books: Budget
) -> None:
    lanes = [
        open_practice(books, f"many-{n:03}", included_usd="0.002", grant_usd="0.001" if n % 2 else None)
        for n in range(100)
    ]

    spent = drive(deployment, books, lanes)

    assert_books_hold(books, lanes, spent)
