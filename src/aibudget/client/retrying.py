"""When a call is sent again: which failures are transient, how long to wait, and whether an earlier
try may have been taken. The policy is told in the `aibudget.client` doc."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from aibudget.client.calls import json_object
from aibudget.errors import DatabaseUnavailable, InvalidInput, PaymentProviderUnavailable

# failures after which the request may or may not have reached the server: sent again
_TRANSIENT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
# of those, the ones that came before anything was sent: no connection was made
_UNSENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# a server restarting, overloaded or without its database; a gateway in front of it
_TRANSIENT_STATUSES = frozenset({502, 503, 504})
# the 503s of the aibudget server that say nothing of the request was recorded
_RECORDED_NOTHING = frozenset({DatabaseUnavailable.code, PaymentProviderUnavailable.code})


def _retry_after(value: str | None) -> float | None:
    """The seconds a `Retry-After` header asks to wait (delay-seconds or an HTTP date); None if it is
    absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@dataclass(frozen=True, slots=True)
class Retry:
    """How often and when a call is sent again after a transient failure (see `BudgetClient`)."""

    retries: int
    backoff: float
    max_backoff: float

    def __post_init__(self) -> None:
        for name in ("retries", "backoff", "max_backoff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not 0 <= value < float("inf"):
                raise InvalidInput(f"{name}: {value!r} must be a finite number >= 0", field=name)

    def wait(self, failed: int, retry_after: float | None) -> float | None:
        """Seconds to wait before the next try of a call that failed `failed + 1` times, the last one
        with an answer that said `Retry-After`; None: give up. The wait doubles from `backoff` up to
        `max_backoff`, jittered (half to all of it) so that clients cut off together do not come back
        together; a `Retry-After` up to `max_backoff` is waited at least, a longer one gives up."""
        if failed >= self.retries or (retry_after is not None and retry_after > self.max_backoff):
            return None
        doubled = self.backoff * 2.0 ** min(failed, 64)  # no float overflow with many retries
        delay: float = min(doubled, self.max_backoff) * random.uniform(0.5, 1.0)
        return delay if retry_after is None else max(delay, retry_after)


class Tries:
    """The tries of one call: after each failure, whether and when to send it again; and whether an
    earlier try may have been taken by the server, so that a 200 may be the replay of its own result."""

    def __init__(self, retry: Retry) -> None:
        self._retry, self._failed = retry, 0
        self.maybe_taken = False

    def after_error(self, error: httpx.TransportError) -> float | None:
        """Seconds to wait before sending again after `error`; None: raise it."""
        if not isinstance(error, _TRANSIENT_ERRORS):
            return None  # a bad URL, a local protocol error: the same again would fail the same
        return self._again(taken=not isinstance(error, _UNSENT_ERRORS), retry_after=None)

    def after_answer(self, response: httpx.Response) -> float | None:
        """Seconds to wait before sending again after `response`; None: it is the answer."""
        if response.status_code not in _TRANSIENT_STATUSES:
            return None
        body = json_object(response.headers.get("content-type", ""), response.content) or {}
        code = body.get("error_code")
        nothing = response.status_code == 503 and isinstance(code, str) and code in _RECORDED_NOTHING
        return self._again(taken=not nothing, retry_after=_retry_after(response.headers.get("retry-after")))

    def _again(self, *, taken: bool, retry_after: float | None) -> float | None:
        wait = self._retry.wait(self._failed, retry_after)
        if wait is not None:
            self._failed += 1
            self.maybe_taken = self.maybe_taken or taken
        return wait
