"""A local fake of the few Stripe HTTP endpoints aibudget uses, served over real HTTP on 127.0.0.1.

Tests point the official `stripe` package at it, so the package's own encoding, headers, retries
and error mapping are exercised, not mocked::

    with FakeStripe() as fake:
        fake.add_customer("cus_1")
        client = stripe.StripeClient(
            FakeStripe.api_key,
            base_addresses={"api": fake.url},
            http_client=stripe.HTTPXClient(allow_sync_methods=True),
            max_network_retries=0,
        )
        intent = client.v1.payment_intents.create(params={...}, options={"idempotency_key": "k1"})

(`stripe.HTTPXClient()` without `allow_sync_methods=True` refuses every synchronous call with a
`RuntimeError`, before any HTTP is sent.)

What it covers, as Stripe does it:

- `POST /v1/payment_intents`: the outcome is chosen by `payment_method`, with Stripe's test ids:
  `pm_card_chargeDeclined` → 402 `card_error` `card_declined` (decline code `generic_decline`), the
  embedded PaymentIntent `requires_payment_method`; `pm_card_authenticationRequired` → 402
  `card_error` `authentication_required`, the PaymentIntent `requires_action`; any other → 200,
  `succeeded`. Without `confirm=true` nothing is charged: `requires_confirmation`.
- `GET /v1/payment_intents`: every PaymentIntent created, newest first; `customer` filters,
  `limit` (1-100, default 10) cuts and sets `has_more`.
- `GET /v1/customers/{id}` for customers registered with `add_customer`, 404 `resource_missing`
  for any other.
- `GET /v1/customers/{id}/payment_methods`: the customer's attached cards (its invoice default and
  the `cards` given to `add_customer`), newest first as Stripe lists them; `type` filters (only
  `card` has entries), `limit` (1-100, default 10) cuts and sets `has_more`; 404 `resource_missing`
  for an unknown customer.
- `POST /v1/checkout/sessions`: an `open`, `unpaid` session whose `url` points at this server
  (nothing is served there); `mode`, `success_url` and `line_items` are checked.
- `Authorization: Bearer <api_key>`: another or no key is 401.
- Idempotency keys on every POST (the `stripe` package sends a random one when none is given): a key
  seen before with the same method, path and params replays the stored status and body (header
  `Idempotent-Replayed: true`, nothing new is created); with other params it is 400
  `idempotency_error`; while the first request with a key is still held, another is 409. Only
  answers of an endpoint that ran are stored (200, 402) — not validation errors, 401, 404 or
  `fail_next` failures, so a retry after those runs anew.
- Test controls: `requests`, `payment_intents`, `checkout_sessions`, `wait_for`,
  `hold_payment_intents`/`release` (the PaymentIntent exists, its HTTP answer waits), `fail_next`.
- Module helpers to build signed webhooks: `sign`, `event`, `subscription`,
  `payment_intent_object`, `checkout_session_completed_object`.

What it does not do: any other endpoint or method (404), update/confirm/cancel, other lists, list
cursors (`starting_after`, `ending_before`), `created` filters and `expand` (accepted and ignored),
amount minimums or currency checks, Connect (`Stripe-Account`), API version differences, rate
limits, webhooks sent by the server itself (tests post them), and no state changes after creation
(a session is never paid unless the test builds that event).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

API_KEY = "sk_test_fake"
API_VERSION = "2026-10-28.endive"  # the version stripe 16.1.0 pins; events carry it
DECLINED = "pm_card_chargeDeclined"
AUTHENTICATION_REQUIRED = "pm_card_authenticationRequired"
DAY = 86_400

_T = TypeVar("_T")


@dataclass(frozen=True)
class _CardFailure:
    code: str
    decline_code: str
    message: str
    intent_status: str
    charged: bool  # a failed charge object exists (declines) or not (authentication needed)


# Test payment methods with a failing outcome, as Stripe documents them; any other succeeds.
CARD_FAILURES: dict[str, _CardFailure] = {
    DECLINED: _CardFailure(
        "card_declined", "generic_decline", "Your card was declined.", "requires_payment_method", True
    ),
    AUTHENTICATION_REQUIRED: _CardFailure(
        "authentication_required",
        "authentication_required",
        "Your card was declined. This transaction requires authentication.",
        "requires_action",
        False,
    ),
}


@dataclass
class RecordedRequest:
    """One request as the fake received it; `params` are the form (or query) decoded into a nested
    dict, with the strings as sent (`"true"`, `"950"`) and `key[0]` lists as Python lists."""

    method: str
    path: str
    params: dict[str, Any]
    idempotency_key: str | None
    headers: dict[str, str]  # names in lower case
    body: str
    request_id: str
    status: int | None = None  # the status answered (known before a held answer is sent)
    replayed: bool = False  # an idempotent replay of an earlier answer


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class _Stored:
    method: str
    path: str
    params: dict[str, Any]
    reply: _Reply
    request_id: str
    in_flight: bool = False


class _ApiError(Exception):
    """A Stripe error answer raised by validation; never stored for idempotency."""

    def __init__(
        self, status: int, type_: str, message: str, *, code: str | None = None, param: str | None = None
    ):
        super().__init__(message)
        self.status = status
        self.error: dict[str, Any] = {"type": type_, "message": message}
        if code is not None:
            self.error["code"] = code
            self.error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
        if param is not None:
            self.error["param"] = param


def _missing(param: str) -> _ApiError:
    return _ApiError(
        400,
        "invalid_request_error",
        f"Missing required param: {param}.",
        code="parameter_missing",
        param=param,
    )


def _invalid(param: str, message: str, code: str = "parameter_invalid") -> _ApiError:
    return _ApiError(400, "invalid_request_error", message, code=code, param=param)


class _Hold:
    """What `hold_payment_intents` returns: usable as a context manager that releases on exit."""

    def __init__(self, fake: FakeStripe) -> None:
        self._fake = fake

    def __enter__(self) -> FakeStripe:
        return self._fake

    def __exit__(self, *exc: object) -> None:
        self._fake.release()


class FakeStripe:
    """The fake Stripe API server; see the module doc. Thread-safe; one instance per test."""

    api_key = API_KEY

    def __init__(self, api_key: str | None = None) -> None:
        if api_key is not None:
            self.api_key = api_key
        self._cond = threading.Condition()  # guards all state below; notified on every change
        self._requests: list[RecordedRequest] = []
        self._payment_intents: dict[str, dict[str, Any]] = {}
        self._checkout_sessions: dict[str, dict[str, Any]] = {}
        self._customers: dict[str, dict[str, Any]] = {}
        self._customer_cards: dict[str, list[dict[str, Any]]] = {}  # oldest attached first
        self._idempotent: dict[str, _Stored] = {}
        self._fail_remaining = 0
        self._fail_status = 500
        self._gate: threading.Event | None = None  # set while PaymentIntent answers are held
        self._held = 0
        self._counter = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeStripe:
        if self._server is not None:
            raise RuntimeError("FakeStripe is already running")
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-stripe", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; held answers are released first so no handler thread stays blocked."""
        self.release()
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FakeStripe:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`, the base address to give the `stripe` package."""
        if self._server is None:
            raise RuntimeError("FakeStripe is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- setup and controls --------------------------------------------------------------------

    def add_customer(
        self,
        customer_id: str,
        payment_method: str | None = "pm_card_visa",
        email: str | None = None,
        *,
        cards: Iterable[str] = (),
        default_source: str | None = None,
    ) -> dict[str, Any]:
        """Register (or replace) a customer whose invoice default payment method is `payment_method`
        (None: no default).

        `cards` are further card payment methods attached to the customer but not its default, in the
        order they were attached — as Checkout's `setup_future_usage` or a subscription leaves a card.
        The default is attached first, so `GET /v1/customers/{id}/payment_methods` lists `cards`
        (last first) before it. `default_source` is a legacy card (`card_...`), not in that list.
        """
        attached = [payment_method] if payment_method is not None else []
        attached.extend(card for card in cards if card not in attached)
        customer = {
            "id": customer_id,
            "object": "customer",
            "created": int(time.time()),
            "email": email,
            "name": None,
            "description": None,
            "currency": None,
            "default_source": default_source,
            "delinquent": False,
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": payment_method,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": False,
            "metadata": {},
        }
        with self._cond:
            self._customers[customer_id] = customer
            self._customer_cards[customer_id] = [_payment_method(card, customer_id) for card in attached]
            self._cond.notify_all()
        return customer

    def fail_next(self, count: int = 1, status: int = 500) -> None:
        """Answer the next `count` requests (whatever they are) with `status` and an `api_error`."""
        with self._cond:
            self._fail_remaining = count
            self._fail_status = status

    def hold_payment_intents(self) -> _Hold:
        """Create PaymentIntents (visible in `payment_intents`/`requests`) but hold their HTTP answers
        until `release()`; `with fake.hold_payment_intents(): ...` releases on exit."""
        with self._cond:
            if self._gate is None:
                self._gate = threading.Event()
        return _Hold(self)

    def release(self) -> None:
        """Send every held answer and stop holding."""
        with self._cond:
            gate, self._gate = self._gate, None
        if gate is not None:
            gate.set()

    def wait_for(self, predicate: Callable[[], _T], timeout: float = 5) -> _T:
        """Wait until `predicate()` (called with the fake's lock held) is truthy and return its value;
        `TimeoutError` after `timeout` seconds. Re-checked on every request and state change."""
        with self._cond:
            result = self._cond.wait_for(predicate, timeout)
        if not result:
            raise TimeoutError(f"condition not met within {timeout} s")
        return result

    # -- inspection ----------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in order (a snapshot)."""
        with self._cond:
            return list(self._requests)

    @property
    def payment_intents(self) -> dict[str, dict[str, Any]]:
        """Every PaymentIntent created, succeeded or failed, by id (a snapshot; replays add nothing)."""
        with self._cond:
            return dict(self._payment_intents)

    @property
    def checkout_sessions(self) -> dict[str, dict[str, Any]]:
        with self._cond:
            return dict(self._checkout_sessions)

    @property
    def customers(self) -> dict[str, dict[str, Any]]:
        with self._cond:
            return dict(self._customers)

    @property
    def held(self) -> int:
        """How many HTTP answers are waiting for `release()` right now."""
        with self._cond:
            return self._held

    def complete_checkout_session(
        self, session_id: str, *, payment_intent: str | None = None
    ) -> dict[str, Any]:
        """The `checkout.session.completed` object for a session created here (for a test's webhook)."""
        with self._cond:
            session = self._checkout_sessions[session_id]
        return checkout_session_completed_object(
            id=session_id,
            payment_intent=payment_intent or _new_id("pi_fake"),
            metadata=session["metadata"],
            amount_total=session["amount_total"],
            currency=session["currency"],
            customer=session["customer"],
            client_reference_id=session["client_reference_id"],
        )

    # -- request handling (called from handler threads) ---------------------------------------

    def _dispatch(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[_Reply, threading.Event | None, str | None]:
        """The answer to one request, the gate it must wait for (if held) and its idempotency key."""
        split = urlsplit(target)
        path = split.path
        text = body.decode("utf-8", errors="replace")
        key = headers.get("idempotency-key") or None
        request_id = _new_id("req_fake")
        with self._cond:
            recorded = RecordedRequest(method, path, {}, key, headers, text, request_id)
            self._requests.append(recorded)
            try:
                reply, gate, stored_key = self._answer(recorded, split.query, request_id)
            except _ApiError as exc:
                reply, gate, stored_key = _error_reply(exc.status, exc.error, request_id), None, None
            recorded.status = reply.status
            self._cond.notify_all()
            return reply, gate, stored_key

    def _answer(
        self, recorded: RecordedRequest, query: str, request_id: str
    ) -> tuple[_Reply, threading.Event | None, str | None]:
        method, path, key = recorded.method, recorded.path, recorded.idempotency_key
        recorded.params = decode_form(recorded.body if method == "POST" else query)
        if self._fail_remaining > 0:
            self._fail_remaining -= 1
            raise _ApiError(
                self._fail_status, "api_error", "An unknown error occurred (fake_stripe.fail_next)."
            )
        self._authenticate(recorded.headers.get("authorization"))

        if method == "POST" and key is not None and key in self._idempotent:
            recorded.replayed = True
            return self._replay(self._idempotent[key], recorded), None, None

        handler = self._route(method, path)
        if handler is None:
            raise _ApiError(
                404,
                "invalid_request_error",
                f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
                "or we can help at https://support.stripe.com/.",
            )
        status, obj = handler(recorded.params)
        headers: tuple[tuple[str, str], ...] = ()
        if key is not None:
            headers = (("Idempotency-Key", key),)
        reply = _json_reply(status, obj, request_id, headers)
        gate = self._gate if path == "/v1/payment_intents" else None
        if method == "POST" and key is not None:
            self._idempotent[key] = _Stored(
                method, path, recorded.params, reply, request_id, gate is not None
            )
        if gate is not None:
            self._held += 1
        return reply, gate, key

    def _finish(self, gate: threading.Event | None, key: str | None) -> None:
        if gate is None:
            return
        with self._cond:
            self._held -= 1
            if key is not None and key in self._idempotent:
                self._idempotent[key].in_flight = False
            self._cond.notify_all()

    def _authenticate(self, authorization: str | None) -> None:
        if not authorization:
            raise _ApiError(
                401,
                "invalid_request_error",
                "You did not provide an API key. You need to provide your API key in the Authorization "
                "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            )
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), self.api_key):
            shown = given[:8] + "*" * max(0, len(given) - 12) + given[-4:] if len(given) > 12 else "****"
            raise _ApiError(401, "invalid_request_error", f"Invalid API Key provided: {shown}")

    def _replay(self, stored: _Stored, recorded: RecordedRequest) -> _Reply:
        key = recorded.idempotency_key
        if stored.in_flight:
            raise _ApiError(
                409,
                "idempotency_error",
                "There is currently another in-progress request using this Idempotent Key (that probably "
                f"means you submitted twice, and the other request is still going through): {key}. "
                "Please try again later.",
            )
        same_request = (stored.method, stored.path, stored.params) == (
            recorded.method,
            recorded.path,
            recorded.params,
        )
        if not same_request:
            raise _ApiError(
                400,
                "idempotency_error",
                "Keys for idempotent requests can only be used with the same parameters they were first "
                f"used with. Try using a key other than '{key}' if you meant to execute a different request.",
            )
        extra = (("Idempotent-Replayed", "true"), ("Original-Request", stored.request_id))
        return _Reply(stored.reply.status, stored.reply.body, stored.reply.headers + extra)

    def _route(self, method: str, path: str) -> Callable[[dict[str, Any]], tuple[int, dict[str, Any]]] | None:
        if method == "POST" and path == "/v1/payment_intents":
            return self._create_payment_intent
        if method == "GET" and path == "/v1/payment_intents":
            return self._list_payment_intents
        if method == "POST" and path == "/v1/checkout/sessions":
            return self._create_checkout_session
        match = re.fullmatch(r"/v1/customers/([^/]+)", path)
        if method == "GET" and match:
            customer_id = match.group(1)
            return lambda params: self._retrieve_customer(customer_id)
        match = re.fullmatch(r"/v1/customers/([^/]+)/payment_methods", path)
        if method == "GET" and match:
            customer_id = match.group(1)
            return lambda params: self._list_customer_payment_methods(customer_id, params)
        return None

    def _retrieve_customer(self, customer_id: str) -> tuple[int, dict[str, Any]]:
        customer = self._customers.get(customer_id)
        if customer is None:
            raise _ApiError(
                404,
                "invalid_request_error",
                f"No such customer: '{customer_id}'",
                code="resource_missing",
                param="id",
            )
        return 200, customer

    def _list_customer_payment_methods(
        self, customer_id: str, params: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        self._retrieve_customer(customer_id)  # 404 for an unknown customer
        limit = _limit(params)
        type_ = _optional_text(params, "type")
        newest_first = list(reversed(self._customer_cards.get(customer_id, [])))
        matching = [pm for pm in newest_first if type_ is None or pm["type"] == type_]
        return 200, {
            "object": "list",
            "data": matching[:limit],
            "has_more": len(matching) > limit,
            "url": f"/v1/customers/{customer_id}/payment_methods",
        }

    def _list_payment_intents(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        limit = _limit(params)
        customer = _optional_text(params, "customer")
        newest_first = list(reversed(self._payment_intents.values()))
        matching = [pi for pi in newest_first if customer is None or pi["customer"] == customer]
        return 200, {
            "object": "list",
            "data": matching[:limit],
            "has_more": len(matching) > limit,
            "url": "/v1/payment_intents",
        }

    def _check_customer(self, params: Mapping[str, Any]) -> str | None:
        customer = _optional_text(params, "customer")
        if customer is not None and customer not in self._customers:
            raise _ApiError(
                400,
                "invalid_request_error",
                f"No such customer: '{customer}'",
                code="resource_missing",
                param="customer",
            )
        return customer

    def _create_payment_intent(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if "amount" not in params:
            raise _missing("amount")
        amount = _integer(params, "amount")
        if amount < 1:
            raise _invalid(
                "amount", "This value must be greater than or equal to 1.", "parameter_invalid_integer"
            )
        if "currency" not in params:
            raise _missing("currency")
        currency = _text(params, "currency").lower()
        customer = self._check_customer(params)
        payment_method = _optional_text(params, "payment_method")
        confirm = _boolean(params, "confirm")
        off_session = params.get("off_session")
        if off_session is not None and off_session not in ("true", "false", "one_off", "recurring"):
            raise _invalid("off_session", "Invalid boolean: " + str(off_session))
        metadata = _metadata(params)
        description = _optional_text(params, "description")
        if confirm and payment_method is None:
            raise _ApiError(
                400,
                "invalid_request_error",
                "You cannot confirm this PaymentIntent because it's missing a payment method.",
                code="payment_intent_unexpected_state",
                param="payment_method",
            )

        intent_id = f"pi_fake_{next(self._counter)}_{secrets.token_hex(4)}"
        failure = CARD_FAILURES.get(payment_method or "") if confirm else None
        if not confirm:
            status = "requires_confirmation" if payment_method else "requires_payment_method"
        else:
            status = failure.intent_status if failure else "succeeded"
        charge = _new_id("ch_fake") if confirm and (failure is None or failure.charged) else None
        intent = payment_intent_object(
            id=intent_id,
            amount=amount,
            currency=currency,
            status=status,
            customer=customer,
            metadata=metadata,
            payment_method=payment_method,
            description=description,
            latest_charge=charge,
            failure_code=failure.code if failure else None,
            decline_code=failure.decline_code if failure else None,
            failure_message=failure.message if failure else None,
        )
        self._payment_intents[intent_id] = intent
        if failure is None:
            return 200, intent
        error: dict[str, Any] = {
            "type": "card_error",
            "code": failure.code,
            "decline_code": failure.decline_code,
            "doc_url": f"https://stripe.com/docs/error-codes/{failure.code.replace('_', '-')}",
            "message": failure.message,
            "payment_intent": intent,
            "payment_method": _payment_method(payment_method or "", customer),
        }
        if charge is not None:
            error["charge"] = charge
        return 402, {"error": error}

    def _create_checkout_session(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if "mode" not in params:
            raise _missing("mode")
        mode = _text(params, "mode")
        if mode not in ("payment", "setup", "subscription"):
            raise _invalid(
                "mode", f"Invalid mode: must be one of payment, setup, or subscription (got {mode!r})"
            )
        if "success_url" not in params and params.get("ui_mode") not in ("embedded", "custom"):
            raise _missing("success_url")
        customer = self._check_customer(params)
        line_items = params.get("line_items")
        if mode != "setup" and line_items is None:
            raise _ApiError(
                400,
                "invalid_request_error",
                f"`line_items` is required in `{mode}` mode.",
                code="parameter_missing",
                param="line_items",
            )
        amount_total, currency = _line_items_total(line_items) if line_items is not None else (None, None)
        if currency is None and "currency" in params:
            currency = _text(params, "currency").lower()
        session_id = f"cs_fake_{next(self._counter)}_{secrets.token_hex(8)}"
        created = int(time.time())
        session = {
            "id": session_id,
            "object": "checkout.session",
            "url": f"{self.url}/pay/{session_id}",
            "mode": mode,
            "payment_status": "unpaid",
            "status": "open",
            "metadata": _metadata(params),
            "customer": customer,
            "customer_email": _optional_text(params, "customer_email"),
            "client_reference_id": _optional_text(params, "client_reference_id"),
            "amount_subtotal": amount_total,
            "amount_total": amount_total,
            "currency": currency,
            "success_url": _optional_text(params, "success_url"),
            "cancel_url": _optional_text(params, "cancel_url"),
            "payment_intent": None,
            "subscription": None,
            "created": created,
            "expires_at": created + DAY,
            "livemode": False,
        }
        self._checkout_sessions[session_id] = session
        return 200, session


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeStripe


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "FakeStripe/1.0"

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply, gate, key = fake._dispatch(self.command, self.path, headers, body)
        if gate is not None:
            gate.wait()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply.body)))
            self.send_header("Stripe-Version", API_VERSION)
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:  # the client gave up (timeout) while the answer was held
            pass
        finally:
            fake._finish(gate, key)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: requests are in `FakeStripe.requests`."""


# -- form decoding ---------------------------------------------------------------------------

_KEY = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])*)")
_PART = re.compile(r"\[([^\[\]]*)\]")


def decode_form(text: str) -> dict[str, Any]:
    """Decode a form body or query string as Stripe does: `a[b][0][c]=1` → `{"a": {"b": [{"c": "1"}]}}`.

    Values stay the strings sent. A dict whose keys are exactly `0..n-1` becomes a list, except
    `metadata` (whose keys are the caller's). `expand[]=x` appends. Conflicting keys are a 400.
    """
    root: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        match = _KEY.fullmatch(key)
        parts = [match.group(1), *_PART.findall(match.group(2))] if match else [key]
        node = root
        for depth, part in enumerate(parts):
            name = part if part != "" else str(len(node))
            if depth == len(parts) - 1:
                if isinstance(node.get(name), dict):
                    raise _invalid(key, f"Invalid value for {key}: a hash was expected.")
                node[name] = value
            else:
                child = node.setdefault(name, {})
                if not isinstance(child, dict):
                    raise _invalid(key, f"Invalid hash: {key}")
                node = child
    return {key: _listify(value, key) if isinstance(value, dict) else value for key, value in root.items()}


def _listify(node: dict[str, Any], parent_key: str | None) -> Any:
    converted = {
        key: _listify(value, key) if isinstance(value, dict) else value for key, value in node.items()
    }
    if parent_key != "metadata" and converted and set(converted) == {str(i) for i in range(len(converted))}:
        return [converted[str(i)] for i in range(len(converted))]
    return converted


def _text(params: Mapping[str, Any], name: str) -> str:
    value = params[name]
    if not isinstance(value, str) or value == "":
        raise _invalid(name, f"Invalid string: {name} must be a non-empty string.")
    return value


def _optional_text(params: Mapping[str, Any], name: str) -> str | None:
    return _text(params, name) if params.get(name) not in (None, "") else None


def _integer(params: Mapping[str, Any], name: str, label: str | None = None) -> int:
    value = params[name]
    if not isinstance(value, str) or not re.fullmatch(r"-?[0-9]+", value):
        raise _invalid(label or name, f"Invalid integer: {value}", "parameter_invalid_integer")
    return int(value)


def _limit(params: Mapping[str, Any]) -> int:
    limit = _integer(params, "limit") if "limit" in params else 10
    if not 1 <= limit <= 100:
        raise _invalid("limit", "This value must be between 1 and 100.", "parameter_invalid_integer")
    return limit


def _boolean(params: Mapping[str, Any], name: str) -> bool:
    value = params.get(name)
    if value is None:
        return False
    if value not in ("true", "false"):
        raise _invalid(name, f"Invalid boolean: {value}")
    return bool(value == "true")


def _metadata(params: Mapping[str, Any]) -> dict[str, str]:
    metadata = params.get("metadata", {})
    if metadata == "":
        return {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _invalid("metadata", "Invalid metadata: keys and values must be strings.")
    return {key: value for key, value in metadata.items() if value != ""}  # "" unsets, as in Stripe


def _line_items_total(line_items: Any) -> tuple[int | None, str | None]:
    """Check `line_items` and sum what `price_data` gives; (None, None) if a `price` id is used."""
    if not isinstance(line_items, list) or not line_items:
        raise _invalid("line_items", "Invalid array: line_items must be a non-empty list.")
    total: int | None = 0
    currencies: set[str] = set()
    for index, item in enumerate(line_items):
        prefix = f"line_items[{index}]"
        if not isinstance(item, dict):
            raise _invalid(prefix, f"Invalid hash: {prefix}")
        quantity = _integer(item, "quantity", f"{prefix}[quantity]") if "quantity" in item else None
        if quantity is None:
            raise _missing(f"{prefix}[quantity]")
        if quantity < 1:
            raise _invalid(f"{prefix}[quantity]", "This value must be greater than or equal to 1.")
        price_data = item.get("price_data")
        if isinstance(price_data, dict):
            for required in ("currency", "unit_amount"):
                if required not in price_data:
                    raise _missing(f"{prefix}[price_data][{required}]")
            product_data = price_data.get("product_data")
            if "product" not in price_data and not (
                isinstance(product_data, dict) and product_data.get("name")
            ):
                raise _missing(f"{prefix}[price_data][product_data][name]")
            unit_amount = _integer(price_data, "unit_amount", f"{prefix}[price_data][unit_amount]")
            if unit_amount < 0:
                raise _invalid(
                    f"{prefix}[price_data][unit_amount]", "This value must be greater than or equal to 0."
                )
            currencies.add(_text(price_data, "currency").lower())
            if total is not None:
                total += unit_amount * quantity
        elif "price" in item:
            total = None
        else:
            raise _ApiError(
                400,
                "invalid_request_error",
                f"You must specify either `price` or `price_data` in {prefix}.",
                param=prefix,
            )
    if len(currencies) > 1:
        raise _invalid("line_items", "All line items must use the same currency.")
    currency = currencies.pop() if currencies else None
    return (total if currency is not None else None), currency


# -- answers ---------------------------------------------------------------------------------


def _json_reply(
    status: int, obj: Mapping[str, Any], request_id: str, headers: tuple[tuple[str, str], ...] = ()
) -> _Reply:
    body = json.dumps(obj, indent=2).encode("utf-8")
    return _Reply(status, body, (("Request-Id", request_id), *headers))


def _error_reply(status: int, error: dict[str, Any], request_id: str) -> _Reply:
    return _json_reply(status, {"error": {**error, "request_log_url": None}}, request_id)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def _payment_method(payment_method: str, customer: str | None) -> dict[str, Any]:
    return {
        "id": payment_method,
        "object": "payment_method",
        "type": "card",
        "customer": customer,
        "card": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2034},
        "livemode": False,
    }


# -- webhook building ------------------------------------------------------------------------


def sign(
    payload: bytes | str, secret: str, timestamp: int | None = None, *, extra_secrets: Iterable[str] = ()
) -> str:
    """The `Stripe-Signature` header for `payload`: `t=<timestamp>,v1=<HMAC-SHA256 hex of "t.payload">`,
    then one more `v1=` per extra secret (as Stripe signs while a secret is being rolled)."""
    body = payload.encode("utf-8") if isinstance(payload, str) else payload
    t = int(time.time()) if timestamp is None else timestamp
    parts = [f"t={t}"]
    for key in (secret, *extra_secrets):
        digest = hmac.new(key.encode("utf-8"), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        parts.append(f"v1={digest}")
    return ",".join(parts)


def event(
    type: str, obj: dict[str, Any], *, event_id: str | None = None, created: int | None = None
) -> dict[str, Any]:
    """A Stripe event envelope around `obj` (serialize it with `json.dumps(...).encode()` and `sign`)."""
    return {
        "id": event_id or _new_id("evt_fake"),
        "object": "event",
        "api_version": API_VERSION,
        "created": int(time.time()) if created is None else created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type,
    }


def subscription(
    *,
    id: str | None = None,
    customer: str = "cus_fake",
    status: str = "active",
    practice_id: str | None = "p1",
    metadata: Mapping[str, str] | None = None,
    lookup_key: str | None = "basic",
    current_period_start: int | None = None,
    current_period_end: int | None = None,
    created: int | None = None,
    cancel_at_period_end: bool = False,
) -> dict[str, Any]:
    """A Subscription object; the period is on the item (API 2025-03-31 and later) and at the top level
    (older versions). `practice_id` goes into `metadata["practice_id"]` unless None."""
    subscription_id = id or _new_id("sub_fake")
    created = int(time.time()) if created is None else created
    start = created if current_period_start is None else current_period_start
    end = start + 30 * DAY if current_period_end is None else current_period_end
    all_metadata = dict(metadata or {})
    if practice_id is not None:
        all_metadata.setdefault("practice_id", practice_id)
    price = {
        "id": f"price_fake_{lookup_key or 'plan'}",
        "object": "price",
        "active": True,
        "currency": "eur",
        "lookup_key": lookup_key,
        "recurring": {"interval": "month", "interval_count": 1},
        "type": "recurring",
        "livemode": False,
    }
    item = {
        "id": _new_id("si_fake"),
        "object": "subscription_item",
        "created": created,
        "current_period_start": start,
        "current_period_end": end,
        "metadata": {},
        "price": price,
        "quantity": 1,
        "subscription": subscription_id,
    }
    return {
        "id": subscription_id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "metadata": all_metadata,
        "items": {
            "object": "list",
            "data": [item],
            "has_more": False,
            "total_count": 1,
            "url": f"/v1/subscription_items?subscription={subscription_id}",
        },
        "current_period_start": start,
        "current_period_end": end,
        "cancel_at_period_end": cancel_at_period_end,
        "canceled_at": None,
        "ended_at": None,
        "created": created,
        "start_date": created,
        "livemode": False,
    }


def payment_intent_object(
    *,
    id: str | None = None,
    amount: int = 2500,
    currency: str = "eur",
    status: str = "succeeded",
    customer: str | None = "cus_fake",
    metadata: Mapping[str, str] | None = None,
    payment_method: str | None = "pm_card_visa",
    description: str | None = None,
    latest_charge: str | None = None,
    failure_code: str | None = None,
    decline_code: str | None = None,
    failure_message: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """A PaymentIntent object; `failure_code` fills `last_payment_error` (for `payment_failed`)."""
    intent_id = id or _new_id("pi_fake")
    if latest_charge is None and status == "succeeded":
        latest_charge = _new_id("ch_fake")
    next_action = {"type": "use_stripe_sdk", "use_stripe_sdk": {}} if status == "requires_action" else None
    last_error = None
    if failure_code is not None:
        last_error = {
            "type": "card_error",
            "code": failure_code,
            "decline_code": decline_code,
            "message": failure_message or "Your card was declined.",
            "charge": latest_charge,
            "payment_method": _payment_method(payment_method, customer) if payment_method else None,
        }
    return {
        "id": intent_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_received": amount if status == "succeeded" else 0,
        "capture_method": "automatic",
        "client_secret": f"{intent_id}_secret_{secrets.token_hex(8)}",
        "confirmation_method": "automatic",
        "created": int(time.time()) if created is None else created,
        "currency": currency,
        "customer": customer,
        "description": description,
        "last_payment_error": last_error,
        "latest_charge": latest_charge,
        "livemode": False,
        "metadata": dict(metadata or {}),
        "next_action": next_action,
        "payment_method": payment_method,
        "payment_method_types": ["card"],
        "status": status,
    }


def checkout_session_completed_object(
    *,
    id: str | None = None,
    payment_intent: str | None = None,
    payment_status: str = "paid",
    status: str = "complete",
    metadata: Mapping[str, str] | None = None,
    amount_total: int | None = 2500,
    currency: str | None = "eur",
    customer: str | None = "cus_fake",
    client_reference_id: str | None = None,
    mode: str = "payment",
    created: int | None = None,
) -> dict[str, Any]:
    """A completed Checkout Session, as `checkout.session.completed` carries it."""
    created = int(time.time()) if created is None else created
    return {
        "id": id or _new_id("cs_fake"),
        "object": "checkout.session",
        "mode": mode,
        "payment_status": payment_status,
        "status": status,
        "payment_intent": payment_intent or (_new_id("pi_fake") if mode == "payment" else None),
        "metadata": dict(metadata or {}),
        "amount_subtotal": amount_total,
        "amount_total": amount_total,
        "currency": currency,
        "customer": customer,
        "client_reference_id": client_reference_id,
        "created": created,
        "expires_at": created + DAY,
        "url": None,
        "livemode": False,
    }
