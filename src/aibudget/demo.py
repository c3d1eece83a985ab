"""`aibudget demo`: a practice's month of realistic AI traffic, then what the practice and the vendor see.

A doctor's practice on a small plan dictates and drafts letters every working day of the current
month; when its included allowance runs low it buys extra credit. Traffic is generated from a seed
per month and request ids are stable, so running the demo again replays the same calls: the books
do not change, which is the idempotency guarantee at work.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from aibudget.budget import Budget
from aibudget.config import Settings
from aibudget.errors import BudgetExceeded
from aibudget.money import format_usd

PRACTICE = "praxis-demo"
TIMEZONE = "Europe/Zurich"


@dataclass(frozen=True, slots=True)
class Call:
    at: datetime
    request_id: str
    operation: str
    model: str
    usage: dict[str, Any]  # keyword arguments of Budget.settle
    estimate: dict[str, Any]  # keyword arguments of Budget.authorize


def _calls(month_start: datetime, until: datetime) -> list[Call]:
    """Working days 07:30-18:00: dictations (3-6 min), their transcription, and letters."""
    rng = random.Random(month_start.strftime("%Y-%m"))
    calls: list[Call] = []
    day = month_start
    while day < until:
        if day.weekday() < 5:
            for n in range(rng.randint(10, 16)):
                at = day.replace(hour=7, minute=30) + timedelta(minutes=rng.randint(0, 630))
                rid = f"demo-{at:%Y%m%d}-{n:02d}"
                seconds = Decimal(rng.randint(180, 360)) + Decimal(rng.randint(0, 999)) / 1000
                model = rng.choice(["whisper-1", "whisper-1", "gpt-4o-transcribe"])
                spoken_tokens = int(seconds * 3)  # ~180 words a minute, ~1.3 tokens a word
                calls.append(
                    Call(
                        at,
                        f"{rid}-t",
                        "transcribe",
                        model,
                        {"audio_seconds": seconds, "output_tokens": spoken_tokens},
                        {"audio_seconds": seconds, "max_output_tokens": 2 * spoken_tokens},
                    )
                )
                letter = rng.choice(["gpt-4o-mini", "gpt-4o-mini", "gpt-4.1", "gpt-5"])
                prompt = 900 + spoken_tokens + rng.randint(0, 600)
                output = rng.randint(350, 900) + (rng.randint(500, 2500) if letter == "gpt-5" else 0)
                calls.append(
                    Call(
                        at + timedelta(minutes=2),
                        f"{rid}-l",
                        "letter",
                        letter,
                        {"input_tokens": prompt, "cached_input_tokens": 768, "output_tokens": output},
                        {"input_tokens": prompt, "max_output_tokens": 4000},
                    )
                )
        day += timedelta(days=1)
    return sorted(calls, key=lambda call: call.at)


def run(settings: Settings, say: Callable[[str], None] = print) -> None:
    zone = ZoneInfo(TIMEZONE)
    now_local = datetime.now(zone)
    month_start = now_local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    next_month = (month_start + timedelta(days=32)).replace(day=1)
    # The demo month ends on the 28th at 18:00: late enough to show a nearly used-up allowance.
    demo_now = month_start.replace(day=28, hour=18)
    clock = _Clock(month_start.astimezone(UTC))
    with Budget.open(settings=settings, clock=clock) as budget:
        budget.put_plan("praxis-start", included_usd="5")
        budget.put_practice(PRACTICE, name="Praxis Dr. Muster", locale="de-CH", timezone=TIMEZONE)
        budget.put_subscription(
            "sub_demo",
            practice_id=PRACTICE,
            plan="praxis-start",
            status="active",
            current_period_start=int(month_start.timestamp()),
            current_period_end=int(next_month.timestamp()),
            updated_at=int(month_start.timestamp()),
        )
        budget.bind_device("demo-desk-1", practice_id=PRACTICE, user_key="mpa-anna")
        cost: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        refused = replayed = 0
        bought = False
        for call in _calls(month_start, demo_now):
            clock.now = call.at.astimezone(UTC)
            if call.at.day >= 18 and not bought:  # the practice buys extra credit on the 18th
                budget.grant_credit(
                    PRACTICE, amount_usd="10", source="purchase", reference="demo-pi-credit-10"
                )
                bought = True
            try:
                budget.authorize(
                    device_id="demo-desk-1",
                    request_id=call.request_id,
                    operation=call.operation,
                    model=call.model,
                    **call.estimate,
                )
            except BudgetExceeded:
                refused += 1
                continue
            event = budget.settle(
                device_id="demo-desk-1",
                request_id=call.request_id,
                model=call.model,
                meta={"app_version": "4.2.1", "keyboard": "de-CH"},
                **call.usage,
            )
            replayed += event.replayed
            cost[(call.operation, event.priced_as or call.model)][0] += 1
            cost[(call.operation, event.priced_as or call.model)][1] += event.cost_micros
        clock.now = demo_now.astimezone(UTC)
        snapshot = budget.snapshot(PRACTICE)
        problems = budget.verify()

    say(f"Praxis Dr. Muster, plan praxis-start (5 USD a month), {month_start:%B %Y} up to the 28th, 18:00")
    say(
        ""
        if not replayed
        else f"(this month's calls were recorded before: {replayed} replays charged nothing)"
    )
    say(f"{'operation':<11} {'model':<18} {'calls':>6} {'cost USD':>11}")
    for (operation, model), (count, micros) in sorted(cost.items()):
        say(f"{operation:<11} {model:<18} {count:>6} {format_usd(micros):>11}")
    say(f"refused (402): {refused}\n")
    say("Operator view (GET /v1/practices/praxis-demo/budget):")
    for key, value in snapshot.as_json().items():
        say(f"  {key:<28} {value}")
    for locale in ("de-CH", "fr-CH", "en"):
        view = snapshot.client_view(locale=locale)
        say(
            f"\nDesktop ({locale}): {view.user_label} - {view.renewal_date_display}"
            f"{' [warning]' if view.show_warning else ''}"
        )
    say(f"\nverify: {problems or 'the books balance'}")


class _Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now
