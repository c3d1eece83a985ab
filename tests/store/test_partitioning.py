"""The events table is ready for monthly partitioning (SPEC §12): on PostgreSQL it converts to a table
partitioned by `occurred_at` with plain DDL, and the ledger works on it unchanged — settles and
their replays, refusals, pruning, `verify`.

`CONVERT` below is the worked example the README points to for operators.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from aibudget import Budget, BudgetExceeded, Settings
from tests.conftest import FakeClock
from tests.databases import PostgresServer, connect
from tests.factories import create_practice, open_practice, transcribe, usage_events


def month_micros(year: int, month: int) -> int:
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp()) * 1_000_000


MONTHS = [(2026, 10), (2026, 11), (2026, 12), (2027, 1)]
PARTITIONS = "\n".join(
    f"CREATE TABLE usage_events_{y}_{m:02} PARTITION OF usage_events"
    f" FOR VALUES FROM ({month_micros(y, m)}) TO ({month_micros(*next_month)});"
    for (y, m), next_month in zip(MONTHS, [*MONTHS[1:], (2027, 2)], strict=True)
)
CONVERT = f"""
ALTER TABLE usage_events RENAME TO usage_events_unpartitioned;
CREATE TABLE usage_events (LIKE usage_events_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (occurred_at);
ALTER TABLE usage_events ADD PRIMARY KEY (event_id, occurred_at);
CREATE INDEX ix_usage_events_practice_id_occurred_at_p ON usage_events (practice_id, occurred_at);
ALTER TABLE usage_events ADD FOREIGN KEY (practice_id) REFERENCES practices (practice_id);
ALTER TABLE usage_events ADD FOREIGN KEY (period_id) REFERENCES periods (period_id);
{PARTITIONS}
CREATE TABLE usage_events_default PARTITION OF usage_events DEFAULT;
INSERT INTO usage_events SELECT * FROM usage_events_unpartitioned;
ALTER SEQUENCE usage_events_event_id_seq OWNED BY usage_events.event_id;
DROP TABLE usage_events_unpartitioned;
"""


@pytest.fixture
def url(postgres: PostgresServer) -> Iterator[str]:
    created = postgres.create_database()
    yield created
    postgres.drop_database(created)


def run(url: str, sql: str) -> list[tuple[Any, ...]]:
    with connect(url) as plain:
        cursor = plain.execute(sql)
        return cursor.fetchall() if cursor.description else []


def test_the_ledger_runs_unchanged_on_events_partitioned_by_month(
    url: str, tmp_path: Path, clock: FakeClock
) -> None:
    clock.now = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    with Budget.open(url, settings=Settings.load(data_dir=tmp_path / "var"), clock=clock) as budget:
        open_practice(budget, "p1", included_usd="1")
        transcribe(budget, "before-1", usd="0.1")  # history written before the conversion
        run(url, CONVERT)

        replay = transcribe(budget, "before-1", usd="0.1")
        assert replay.replayed
        transcribe(budget, "nov-1", usd="0.2")
        clock.now = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
        transcribe(budget, "dec-1", usd="0.3")
        assert transcribe(budget, "dec-1", usd="0.3").replayed
        create_practice(budget, "p2")
        with pytest.raises(BudgetExceeded):
            budget.authorize(practice_id="p2", request_id="x", operation="letter", model="gpt-4o-mini")
        assert budget.verify() == []

        per_partition = dict(
            run(url, "SELECT tableoid::regclass::text, count(*) FROM usage_events GROUP BY 1")  # type: ignore[arg-type]
        )
        assert per_partition == {
            "usage_events_2026_11": 2,
            "usage_events_2026_12": 2,
        }  # dec-1 and the refusal

        assert budget.prune_usage(date(2026, 12, 1)).events == 2
        assert [event.request_id for event in usage_events(budget)] == ["dec-1", "x"]
        assert budget.verify() == []
        assert budget.snapshot("p1").used_micros == 300_000  # December's call; November's carried on its row
