"""Every error aibudget raises on purpose, each with a stable code and an HTTP status.

The tree::

    AibudgetError                      code             status
    ├── ConfigError                    CONFIG_INVALID    500  bad settings; raised at start-up only
    ├── InvalidInput                   INVALID_INPUT     422  names the offending field
    │   ├── UnknownModel               UNKNOWN_MODEL     422  no price and the policy is `refuse`
    │   ├── UnreadableAudio            INVALID_AUDIO     422  empty or missing audio file
    │   └── InvalidWebhook             WEBHOOK_INVALID   400  bad or stale signature, malformed event
    ├── BudgetExceeded                 AI_BUDGET_EXCEEDED 402 refused authorization; `.payload`
    ├── NotFound                       NOT_FOUND         404
    ├── PaymentsOff                    PAYMENTS_OFF      404  Stripe is not configured
    ├── PaymentProviderUnavailable     PAYMENT_PROVIDER_UNAVAILABLE 503  Stripe did not answer
    ├── DatabaseUnavailable            DATABASE_UNAVAILABLE 503  nothing recorded; safe to retry
    ├── Forbidden                      FORBIDDEN         403
    │   └── DeviceNotInPractice        DEVICE_PRACTICE_MISMATCH
    └── Conflict                       CONFLICT          409
        └── IdempotencyConflict        IDEMPOTENCY_CONFLICT  same request id, different body

Callers catch `AibudgetError` at the edge (HTTP, CLI) and render `code`, `http_status` and `detail`;
nothing below the edge turns an error into a silent default.
"""

from __future__ import annotations

from typing import Any


class AibudgetError(Exception):
    """Base of every deliberate error: `code` is machine-readable, `detail` is for humans."""

    code: str = "AIBUDGET_ERROR"
    http_status: int = 500
    title: str = "aibudget error"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class ConfigError(AibudgetError):
    """A setting has a value aibudget cannot run with; the message names the variable and value."""

    code = "CONFIG_INVALID"
    title = "Invalid configuration"


class InvalidInput(AibudgetError):
    """A request or command argument is malformed; `field` names it."""

    code = "INVALID_INPUT"
    http_status = 422
    title = "Invalid input"


class UnknownModel(InvalidInput):
    """The model has no price and the unknown-model policy is `refuse`."""

    code = "UNKNOWN_MODEL"
    title = "Unknown model"


class UnreadableAudio(InvalidInput):
    """The audio file is missing or empty, so it has no duration to charge."""

    code = "INVALID_AUDIO"
    title = "Unreadable audio"


class BudgetExceeded(AibudgetError):
    """Nothing (or not enough, in strict mode) is left: the call must not be made.

    A normal outcome, not a failure: `payload` is the 402 body (SPEC §4) with a localized
    `message_user` and a machine-readable `reason`. The refusal is already recorded as a `blocked`
    event when this is raised.
    """

    code = "AI_BUDGET_EXCEEDED"
    http_status = 402
    title = "AI budget exceeded"

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__(str(payload["message_user"]))
        self.payload = payload
        self.reason: str = payload["reason"]


class InvalidWebhook(InvalidInput):
    """An incoming webhook whose signature, timestamp or body cannot be trusted; nothing is written."""

    code = "WEBHOOK_INVALID"
    http_status = 400
    title = "Invalid webhook"


class PaymentsOff(AibudgetError):
    """A payments feature was used while its Stripe setting is unset; the detail names the setting."""

    code = "PAYMENTS_OFF"
    http_status = 404
    title = "Payments are not configured"


class PaymentProviderUnavailable(AibudgetError):
    """Stripe failed or could not be reached; nothing was charged or granted by this request."""

    code = "PAYMENT_PROVIDER_UNAVAILABLE"
    http_status = 503
    title = "Payment provider unavailable"


class DatabaseUnavailable(AibudgetError):
    """The database did not answer, refused the write (read-only, disk full) or timed out, after the
    transaction was tried again; nothing of this request was recorded. Fail closed: no call is
    allowed that could not be recorded. The same request, sent again later, is safe."""

    code = "DATABASE_UNAVAILABLE"
    http_status = 503
    title = "Database unavailable"


class NotFound(AibudgetError):
    code = "NOT_FOUND"
    http_status = 404
    title = "Not found"


class Forbidden(AibudgetError):
    code = "FORBIDDEN"
    http_status = 403
    title = "Forbidden"


class DeviceNotInPractice(Forbidden):
    """A device bound to one practice was used for another: refused, never re-routed."""

    code = "DEVICE_PRACTICE_MISMATCH"
    title = "Device belongs to another practice"


class Conflict(AibudgetError):
    code = "CONFLICT"
    http_status = 409
    title = "Conflict"


class IdempotencyConflict(Conflict):
    """A request id was used again with a different body; the first result stands."""

    code = "IDEMPOTENCY_CONFLICT"
    title = "Request id reused with a different body"
