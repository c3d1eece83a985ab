"""Budget notifications (SPEC §6): `budget.threshold_crossed` and `budget.exhausted`, into the outbox.

Both are written in the transaction of the settle or refusal that causes them, so a notification
exists exactly when its cause is on the books. Their dedupe keys make the SPEC's "once" a unique
constraint:

- a threshold (default 80 % and 100 % of the period's included budget consumed) once per period,
  sent by the first settle that leaves the period at or past it. That is the period the settle was
  charged to — the one a call was authorized in, also when it is settled after the next began — and
  "at or past", not "crossed by this settle": a plan lowered below what was used already puts the
  period past its lines, and the next settle tells it; nothing is told to a practice whose
  subscription has ended (a call settled after the cancellation);
- exhaustion — included budget and every credit used up, holds aside — once per period and per
  credit grant count, so a practice that buys credit and runs dry again is told again; never while
  an automatic top-up is claimed or being charged (the credit is on its way).

Besides the figures, each carries `locale`, `title` and `message_user`: what to tell the practice's
staff, in the practice's language, with the renewal date in its timezone. Exhaustion is worded as
the refusal of a call for the same reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from sqlalchemy import Connection, func, select

from aibudget.accounts.service import Period
from aibudget.credit import autotopup
from aibudget.ledger import repository
from aibudget.ledger.state import period_figures
from aibudget.money import format_usd
from aibudget.notify import outbox
from aibudget.store import tables
from aibudget.views import refusal, texts
from aibudget.views.client import renewal_date
from aibudget.views.snapshot import Snapshot

EXHAUSTION_REASONS = frozenset(
    {"included_exhausted_no_credit", "auto_topup_paused", "auto_topup_monthly_limit"}
)


def _period_key(snapshot: Snapshot) -> str:
    return f"{snapshot.practice_id}:{snapshot.subscription_id}:{snapshot.period_start}"


def _period_data(snapshot: Snapshot) -> dict[str, object]:
    return {
        "subscription_id": snapshot.subscription_id,
        "period_start": snapshot.period_start,
        "period_end": snapshot.period_end,
        "included_usd": format_usd(snapshot.included_micros),
        "included_remaining_usd": format_usd(snapshot.included_remaining_micros),
        "extra_credit_remaining_usd": format_usd(snapshot.extra_credit_remaining_micros),
    }


def _threshold_texts(snapshot: Snapshot, percent: int) -> dict[str, object]:
    locale = snapshot.locale
    shown = texts.format_percent(percent, locale)
    renews = renewal_date(snapshot)
    if renews is None:
        message = texts.text("Notification: {percent} of the allowance used", locale, percent=shown)
    else:
        message = texts.text(
            "Notification: {percent} of the allowance used, renews on {renewal_date}",
            locale,
            percent=shown,
            renewal_date=texts.format_date(renews, locale),
        )
    title = texts.text("Notification title: {percent} of the allowance used", locale, percent=shown)
    return {"locale": locale, "title": title, "message_user": message}


def _exhausted_texts(snapshot: Snapshot, reason: str) -> dict[str, object]:
    locale = snapshot.locale
    return {
        "locale": locale,
        "title": texts.text("Notification title: allowance used up", locale),
        "message_user": refusal.message_user(snapshot, reason=reason, locale=locale),
    }


def after_settle(
    connection: Connection,
    snapshot: Snapshot,
    *,
    period_id: int | None,
    thresholds: Sequence[int],
    now: datetime,
) -> None:
    """Notify the thresholds the period the settlement was charged to (`period_id`, its event's) has
    reached without being told yet, and exhaustion if the settlement used the last money — unless an
    automatic top-up is claimed or being charged (call after the settle's own claim): telling the
    practice to buy credit that is about to arrive would be wrong (a declined charge says so itself,
    with `topup.failed`).

    `snapshot` is the practice's budget right after the settlement, in its current period: the
    charged period is an earlier one when the call was authorized before the period rolled over."""
    if snapshot.subscription_id is None:  # a call settled after the subscription ended: nothing to tell
        return
    if period_id is not None:
        # the current period as the settle left it, read again only when the call was charged to another
        charged = (
            snapshot
            if period_id == snapshot.period_id
            else _as_of(snapshot, repository.period(connection, period_id))
        )
        thresholds_reached(connection, charged, thresholds=thresholds, now=now)
    if snapshot.included_remaining_micros + snapshot.extra_credit_remaining_micros > 0:
        return
    if snapshot.auto_topup.enabled and autotopup.in_flight(connection, snapshot.practice_id):
        return
    exhausted(connection, snapshot, reason="included_exhausted_no_credit", now=now)


def _as_of(snapshot: Snapshot, period: Period) -> Snapshot:
    """`snapshot` with the figures of `period` in place of its current period's."""
    return replace(snapshot, **period_figures(period))


def thresholds_reached(
    connection: Connection, period: Snapshot, *, thresholds: Sequence[int], now: datetime
) -> None:
    """Notify each threshold that `period` (a snapshot whose period fields are the period's) is at or
    past and has not been told of: once per period and threshold, by the outbox's dedupe key."""
    included = period.included_micros
    if included <= 0:
        return
    # at most `included`: a plan lowered below what was used leaves nothing remaining, not less
    consumed = included - period.included_remaining_micros
    for percent in thresholds:
        line = -(-included * percent // 100)  # rounded up: 100 % means every micro-USD used
        key = f"budget.threshold_crossed:{_period_key(period)}:{percent}"
        if consumed < line or outbox.present(connection, key):  # told already: build nothing
            continue
        outbox.enqueue(
            connection,
            practice_id=period.practice_id,
            event_type="budget.threshold_crossed",
            data={"threshold_percent": percent} | _period_data(period) | _threshold_texts(period, percent),
            dedupe_key=key,
            now=now,
        )


def exhausted(connection: Connection, snapshot: Snapshot, *, reason: str, now: datetime) -> None:
    """Notify that the practice has no money left for AI calls (once per period and grant count)."""
    grants = connection.execute(
        select(func.count()).where(tables.credit_grants.c.practice_id == snapshot.practice_id)
    ).scalar_one()
    outbox.enqueue(
        connection,
        practice_id=snapshot.practice_id,
        event_type="budget.exhausted",
        data={"reason": reason} | _period_data(snapshot) | _exhausted_texts(snapshot, reason),
        dedupe_key=f"budget.exhausted:{_period_key(snapshot)}:{grants}",
        now=now,
    )
