"""`budget.threshold_crossed` once per period and threshold (SPEC §6) while many settles race: after
the plan was lowered below what the period had used, every settle leaves it past both lines, and
only the first may tell them — among threads sharing one `Budget`, and among the processes of
`aibudget serve --workers 2`."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from aibudget import Budget
from tests.api.conftest import stop_server
from tests.test_many_workers import start_workers

THREADS, SETTLES_PER_THREAD = 8, 10


def downgraded(budget: Budget) -> None:
    """Practice p1: 0.60 USD used of 1 USD included, then its plan lowered to 0.50 USD; credit pays on."""
    budget.put_plan("big", included_usd="1")
    budget.put_plan("small", included_usd="0.50")
    budget.put_practice("p1", name="Praxis Muster")
    budget.put_subscription("sub_1", practice_id="p1", plan="big", status="active")
    budget.grant_credit("p1", amount_usd="50", source="manual", reference="gift-1")
    budget.settle(practice_id="p1", request_id="before", model="gpt-4o", input_tokens=240_000)
    budget.put_subscription("sub_1", practice_id="p1", plan="small", status="active")


def thresholds_told(budget: Budget) -> Counter[object]:
    return Counter(
        n.payload["data"]["threshold_percent"]
        for n in budget.notifications(practice_id="p1")
        if n.event_type == "budget.threshold_crossed"
    )


def test_threads_racing_past_the_lines_tell_each_threshold_once(budget: Budget) -> None:
    downgraded(budget)

    def settles(thread: int) -> None:
        for n in range(SETTLES_PER_THREAD):
            budget.settle(practice_id="p1", request_id=f"t{thread}-{n}", model="gpt-4o", input_tokens=4_000)

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(settles, range(THREADS)))

    assert thresholds_told(budget) == {80: 1, 100: 1}
    assert budget.verify() == []


def test_two_workers_racing_past_the_lines_tell_each_threshold_once(
    database_url: str, tmp_path: Path
) -> None:
    server = start_workers(tmp_path / "var", database_url, 2)
    try:
        with server.budget() as budget:
            downgraded(budget)

        def settles(thread: int) -> list[int]:
            answers = []
            for n in range(SETTLES_PER_THREAD):
                body = {"practice_id": "p1", "request_id": f"w{thread}-{n}", "model": "gpt-4o",
                        "usage": {"input_tokens": 4_000}}  # fmt: skip
                # a new connection each time, so the kernel spreads the settles over both workers
                answer = httpx.post(f"{server.url}/v1/usage", json=body, timeout=30,
                                    headers={"Authorization": f"Bearer {server.admin_key}"})  # fmt: skip
                answers.append(answer.status_code)
            return answers

        with ThreadPoolExecutor(THREADS) as pool:
            answers = [status for statuses in pool.map(settles, range(THREADS)) for status in statuses]

        assert answers == [201] * THREADS * SETTLES_PER_THREAD
        with server.budget() as budget:
            assert thresholds_told(budget) == {80: 1, 100: 1}
            assert budget.verify() == []
    finally:
        stop_server(server)
