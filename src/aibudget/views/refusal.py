"""The HTTP 402 `AI_BUDGET_EXCEEDED` payload (SPEC §4): why a call was refused and what to do now.

The payload is the same for every surface (HTTP API, proxy, library error): a machine-readable
`reason`, `available_percent: 0`, the period end and renewal date, the caller's `request_id`, and a
polite `message_user` for the doctor's assistant in front of the desktop, saying what happened and
what they can do — wait for the renewal (with its date when known), buy extra credit, fix the
automatic top-up, or have the subscription renewed. All wording lives in the `texts` catalogs.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from aibudget.views import texts
from aibudget.views.client import renewal_date
from aibudget.views.texts import N_

if TYPE_CHECKING:
    from aibudget.views.snapshot import Snapshot

ERROR_CODE = "AI_BUDGET_EXCEEDED"
REASONS = (
    "included_exhausted_no_credit",
    "insufficient_for_estimate",
    "no_active_subscription",
    "auto_topup_paused",
    "auto_topup_monthly_limit",
    "auto_topup_pending",
)

# reason -> (msgid when the renewal date is known, msgid without a date), marked for extraction.
# Without a subscription there is no allowance to renew, so that message never names a date.
_MESSAGES: dict[str, tuple[str, str]] = {
    "included_exhausted_no_credit": (
        N_("Refusal: allowance used up, renews on {renewal_date}"),
        N_("Refusal: allowance used up"),
    ),
    "insufficient_for_estimate": (
        N_("Refusal: not enough for this request, renews on {renewal_date}"),
        N_("Refusal: not enough for this request"),
    ),
    "no_active_subscription": (N_("Refusal: no active subscription"), N_("Refusal: no active subscription")),
    "auto_topup_paused": (
        N_("Refusal: automatic top-up paused, renews on {renewal_date}"),
        N_("Refusal: automatic top-up paused"),
    ),
    "auto_topup_monthly_limit": (
        N_("Refusal: automatic top-up monthly limit, renews on {renewal_date}"),
        N_("Refusal: automatic top-up monthly limit"),
    ),
    # a charge is under way: the call may go through in a moment, so no date and no purchase advice
    "auto_topup_pending": (
        N_("Refusal: automatic top-up in progress"),
        N_("Refusal: automatic top-up in progress"),
    ),
}


def _message(reason: str, renews: date | None, locale: str) -> str:
    if reason not in _MESSAGES:
        raise ValueError(f"reason: {reason!r} is not one of {', '.join(REASONS)}")
    with_date, without_date = _MESSAGES[reason]
    if renews is None:
        return texts.text(without_date, locale)
    return texts.text(with_date, locale, renewal_date=texts.format_date(renews, locale))


def message_user(snapshot: Snapshot, *, reason: str, locale: str) -> str:
    """The localized sentence shown to the user for a refusal of `reason`."""
    return _message(reason, renewal_date(snapshot), locale)


def in_language(payload: dict[str, object], locale: str) -> dict[str, object]:
    """A refusal's payload with `message_user` in `locale`: the language a request asked for
    (`Accept-Language`) rather than the practice's, in which the refusal was recorded."""
    renews = payload.get("renewal_date")
    day = date.fromisoformat(renews) if isinstance(renews, str) else None
    return payload | {"message_user": _message(str(payload["reason"]), day, locale)}


def refusal_payload(
    snapshot: Snapshot, *, reason: str, request_id: str, locale: str | None = None
) -> dict[str, object]:
    """The body of the 402 refusing `request_id`, in `locale` (default the practice's)."""
    renews = renewal_date(snapshot)
    return {
        "error_code": ERROR_CODE,
        "reason": reason,
        "message_user": message_user(snapshot, reason=reason, locale=locale or snapshot.locale),
        "available_percent": 0,
        "period_end": snapshot.period_end,
        "renewal_date": renews.isoformat() if renews is not None else None,
        "request_id": request_id,
    }
