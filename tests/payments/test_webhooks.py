"""`POST /v1/webhooks/stripe` over real HTTP (SPEC §6): a server started with Stripe settings, events
signed as Stripe signs them. Trusted only when signed (raw body, HMAC-SHA256, any `v1`, 300 s);
applied once per event id; subscription events keep the mirror current and never roll it back."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import select

from aibudget.store import tables
from tests.api.conftest import Server
from tests.api.test_accounts import assert_problem
from tests.fake_stripe import checkout_session_completed_object, event, sign, subscription
from tests.payments.conftest import WEBHOOK_SECRET, assert_received, deliver, new_id, post_webhook

DAY = 86_400
ROLLED_OUT_SECRET = "whsec_" + "o" * 32  # the secret before the one the server has


# helpers


def recorded(server: Server, event_id: str) -> bool:
    """Whether the server recorded the event as seen (its row in `webhook_events`)."""
    with server.budget() as budget, budget.engine.connect() as connection:
        query = select(tables.webhook_events.c.event_id).where(tables.webhook_events.c.event_id == event_id)
        return connection.execute(query).first() is not None


def mirrored(server: Server, subscription_id: str) -> Any:
    """The subscription mirror's row, or None."""
    with server.budget() as budget, budget.engine.connect() as connection:
        query = select(tables.subscriptions).where(tables.subscriptions.c.subscription_id == subscription_id)
        return connection.execute(query).first()


def operator_view(server: Server, practice_id: str) -> dict[str, Any]:
    with server.admin() as admin:
        view = admin.get(f"/v1/practices/{practice_id}/budget")
    assert view.status_code == 200, view.text
    body: dict[str, Any] = view.json()
    return body


def practice_with_plans(server: Server, *plans: tuple[str, str]) -> str:
    """A practice without a subscription, and plans `(lookup_key, included_usd)`."""
    practice_id = new_id("p")
    with server.budget() as budget:
        budget.put_practice(practice_id, name="Praxis Muster")
        for lookup_key, included_usd in plans:
            budget.put_plan(lookup_key, included_usd=included_usd)
    return practice_id


def current_period() -> tuple[int, int]:
    now = int(time.time())
    return now - DAY, now + 29 * DAY


def subscription_event(
    kind: str, subscription_id: str, practice_id: str, *, created: int, **fields: Any
) -> dict[str, Any]:
    start, end = current_period()
    fields = {"current_period_start": start, "current_period_end": end} | fields
    obj = subscription(id=subscription_id, practice_id=practice_id, customer="cus_webhooks", **fields)
    return event(f"customer.subscription.{kind}", obj, created=created)


# the signature


@pytest.fixture(scope="module")
def plan(server: Server) -> str:
    lookup_key = new_id("plan")
    with server.budget() as budget:
        budget.put_plan(lookup_key, included_usd="20")
    return lookup_key


def created_event(server: Server, plan: str) -> tuple[dict[str, Any], str]:
    """A subscription `created` event for a new practice, not delivered yet, and the practice id."""
    practice_id = practice_with_plans(server)
    payload = subscription_event(
        "created", new_id("sub"), practice_id, created=int(time.time()), lookup_key=plan
    )
    return payload, practice_id


def test_a_correctly_signed_event_is_applied(server: Server, plan: str) -> None:
    payload, practice_id = created_event(server, plan)

    assert_received(deliver(server, payload), "applied")
    assert recorded(server, payload["id"])
    assert operator_view(server, practice_id)["subscription_id"] == payload["data"]["object"]["id"]


@pytest.mark.parametrize("position", ["first", "last"])
def test_while_the_secret_is_rolled_any_v1_may_match(server: Server, plan: str, position: str) -> None:
    payload, practice_id = created_event(server, plan)
    body = json.dumps(payload).encode()
    first, other = (
        (WEBHOOK_SECRET, ROLLED_OUT_SECRET) if position == "first" else (ROLLED_OUT_SECRET, WEBHOOK_SECRET)
    )
    signature = sign(body, first, extra_secrets=[other])
    assert signature.count("v1=") == 2

    assert_received(post_webhook(server, body, signature), "applied")
    assert operator_view(server, practice_id)["plan"] == plan


BAD_SIGNATURES = [
    "another secret", "only old secrets", "stale, 301 s old", "an hour old", "body changed after signing",
    "no v1", "v0 only", "no timestamp", "timestamp changed", "not a header", "missing", "a non-ASCII v1",
    "a non-ASCII v1 besides the good one",
]  # fmt: skip


def bad_signature(case: str, body: bytes) -> tuple[bytes, str | None]:
    """`body` (or a changed copy) and a `Stripe-Signature` that must not be trusted for it."""
    now = int(time.time())
    good = sign(body, WEBHOOK_SECRET, now)
    timestamp, digests = good.split(",", 1)
    return {
        "another secret": (body, sign(body, ROLLED_OUT_SECRET, now)),
        "only old secrets": (body, sign(body, ROLLED_OUT_SECRET, now, extra_secrets=["whsec_" + "x" * 32])),
        "stale, 301 s old": (body, sign(body, WEBHOOK_SECRET, now - 301)),
        "an hour old": (body, sign(body, WEBHOOK_SECRET, now - 3600)),
        "body changed after signing": (body.replace(b'"object": "event"', b'"object":  "event"', 1), good),
        "no v1": (body, timestamp),
        "v0 only": (body, good.replace("v1=", "v0=")),
        "no timestamp": (body, digests),
        "timestamp changed": (body, f"t={now - 10},{digests}"),
        "not a header": (body, "garbage"),
        "missing": (body, None),
        "a non-ASCII v1": (body, f"{timestamp},v1=\u00e4"),  # sent as UTF-8 bytes
        "a non-ASCII v1 besides the good one": (body, f"{good},v1=\u20ac"),
    }[case]


@pytest.mark.parametrize("case", BAD_SIGNATURES)
def test_a_bad_missing_or_stale_signature_is_400_and_writes_nothing(
    server: Server, plan: str, case: str
) -> None:
    payload, practice_id = created_event(server, plan)
    body, signature = bad_signature(case, json.dumps(payload).encode())

    refused = post_webhook(server, body, signature)

    problem = assert_problem(refused, 400, "Stripe-Signature")
    assert problem["error_code"] == "WEBHOOK_INVALID"
    assert not recorded(server, payload["id"])
    assert mirrored(server, payload["data"]["object"]["id"]) is None
    assert operator_view(server, practice_id)["subscription_id"] is None
    # the event itself was fine: delivered properly, it is applied (it was not recorded as seen)
    assert_received(deliver(server, payload), "applied")


def test_a_signature_within_the_tolerance_is_accepted(server: Server, plan: str) -> None:
    payload, practice_id = created_event(server, plan)

    assert_received(deliver(server, payload, timestamp=int(time.time()) - 240), "applied")
    assert operator_view(server, practice_id)["plan"] == plan


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(b'{"id": "evt_1", "type": "customer.subscription.created"', "body", id="cut short"),
        pytest.param(b"not json at all", "body", id="not json"),
        pytest.param(b"", "body", id="empty"),
        pytest.param(b'["an", "array"]', "body", id="an array"),
        pytest.param(b'{"type": "invoice.paid", "created": 1, "data": {"object": {}}}', "id", id="no id"),
        pytest.param(b'{"id": "evt_x", "created": 1, "data": {"object": {}}}', "type", id="no type"),
        pytest.param(
            b'{"id": "evt_x", "type": "invoice.paid", "created": "1", "data": {"object": {}}}',
            "created",
            id="created as text",
        ),
        pytest.param(b'{"id": "evt_x", "type": "invoice.paid", "created": 1}', "data.object", id="no data"),
        pytest.param(  # Python reads no integer of over 4,300 digits
            b'{"id": "evt_x", "type": "invoice.paid", "created": '
            + b"9" * 5000
            + b', "data": {"object": {}}}',
            "body",
            id="a 5000-digit number",
        ),
        pytest.param(b"[" * 30_000 + b"]" * 30_000, "body", id="nested too deep"),  # within the 64 KiB limit
    ],
)
def test_a_correctly_signed_body_that_is_not_an_event_is_400(server: Server, body: bytes, field: str) -> None:
    refused = post_webhook(server, body, sign(body, WEBHOOK_SECRET))

    assert assert_problem(refused, 400, field)["error_code"] == "WEBHOOK_INVALID"
    assert not recorded(server, "evt_x")


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_a_body_that_is_not_utf8_is_400_not_500(server: Server, signed: bool) -> None:
    body = b'{"id": "evt_\xff", "type": "invoice.paid"}'
    signature = sign(body, WEBHOOK_SECRET) if signed else f"t={int(time.time())},v1={'0' * 64}"

    refused = post_webhook(server, body, signature)

    assert assert_problem(refused, 400)["error_code"] == "WEBHOOK_INVALID"


# once per event id


def test_a_redelivered_event_is_a_duplicate_and_changes_nothing(server: Server) -> None:
    practice_id = practice_with_plans(server, ("dedupe-a", "10"), ("dedupe-b", "30"))
    subscription_id, created = new_id("sub"), int(time.time())
    payload = subscription_event(
        "updated", subscription_id, practice_id, created=created, lookup_key="dedupe-a"
    )
    assert_received(deliver(server, payload), "applied")
    # meanwhile the operator mirrors a change stamped with the same provider time: a redelivery of
    # the event, were it applied again, would win the tie and put plan A back
    with server.budget() as budget:
        start, end = current_period()
        budget.put_subscription(
            subscription_id, practice_id=practice_id, plan="dedupe-b", status="active",
            current_period_start=start, current_period_end=end, updated_at=created,
        )  # fmt: skip

    for _ in range(2):
        assert_received(deliver(server, payload), "duplicate")

    view = operator_view(server, practice_id)
    assert (view["plan"], view["included_usd"]) == ("dedupe-b", "30.000000")


def test_concurrent_deliveries_of_one_event_apply_it_once(server: Server) -> None:
    practice_id = practice_with_plans(server)
    payment = f"pi_{uuid.uuid4().hex}"
    metadata = {"aibudget_practice_id": practice_id, "aibudget_credit_micros": "25000000"}
    payload = event(
        "checkout.session.completed",
        checkout_session_completed_object(payment_intent=payment, metadata=metadata),
    )

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: deliver(server, payload), range(8)))

    assert all(answer.status_code == 200 for answer in answers), [a.text for a in answers]
    outcomes = sorted(answer.json()["outcome"] for answer in answers)
    assert outcomes == ["applied"] + ["duplicate"] * 7
    with server.budget() as budget:
        assert [(grant.reference, grant.source) for grant in budget.grants(practice_id)] == [
            (payment, "purchase")
        ]


@pytest.mark.parametrize(
    "kind", ["invoice.paid", "customer.created", "charge.refunded", "payment_intent.created"]
)
def test_an_event_type_aibudget_does_not_use_is_acknowledged_and_ignored(server: Server, kind: str) -> None:
    payload = event(kind, {"id": new_id("obj"), "object": kind.split(".")[0], "metadata": {}})

    assert_received(deliver(server, payload), "ignored")
    assert not recorded(server, payload["id"])
    assert_received(deliver(server, payload), "ignored")


# subscription sync


def test_a_created_subscription_funds_the_practice_with_its_plan_and_period(server: Server) -> None:
    practice_id = practice_with_plans(server, ("sync-basic", "20"))
    subscription_id, (start, end) = new_id("sub"), current_period()
    payload = subscription_event(
        "created", subscription_id, practice_id, created=int(time.time()), lookup_key="sync-basic",
        current_period_start=start, current_period_end=end,
    )  # fmt: skip

    assert_received(deliver(server, payload), "applied")

    view = operator_view(server, practice_id)
    assert (view["subscription_id"], view["plan"]) == (subscription_id, "sync-basic")
    assert (view["included_usd"], view["available_usd"]) == ("20.000000", "20.000000")
    assert (view["period_start"], view["period_end"]) == (start, end)
    row = mirrored(server, subscription_id)
    assert (row.status, row.customer_id, row.updated_at) == ("active", "cus_webhooks", payload["created"])


def test_a_lookup_key_is_mirrored_as_stripe_keeps_it_padded_or_not(server: Server) -> None:
    """Stripe allows any lookup key of up to 200 characters: one with a space at its end is the plan
    set up with that very key, and its events are applied — a refused one would come again and again
    and leave the mirror wrong (a cancelled subscription still spending)."""
    practice_id = practice_with_plans(server, ("padded-basic ", "20"), ("padded-basic", "50"))
    subscription_id, created = new_id("sub"), int(time.time())
    payload = subscription_event(
        "created", subscription_id, practice_id, created=created, lookup_key="padded-basic "
    )

    assert_received(deliver(server, payload), "applied")
    view = operator_view(server, practice_id)
    assert (view["plan"], view["included_usd"]) == ("padded-basic ", "20.000000")

    deleted = subscription_event(
        "deleted", subscription_id, practice_id, created=created + 1, lookup_key="padded-basic ",
        status="canceled",
    )  # fmt: skip
    assert_received(deliver(server, deleted), "applied")
    assert mirrored(server, subscription_id).status == "canceled"


def test_an_update_changes_plan_and_period(server: Server) -> None:
    practice_id = practice_with_plans(server, ("upd-basic", "20"), ("upd-pro", "50"))
    subscription_id, created = new_id("sub"), int(time.time())
    start, end = current_period()
    first = subscription_event(
        "created", subscription_id, practice_id, created=created, lookup_key="upd-basic"
    )
    assert_received(deliver(server, first), "applied")

    later_start, later_end = start - 3 * DAY, end + 2 * DAY
    update = subscription_event(
        "updated", subscription_id, practice_id, created=created + 60, lookup_key="upd-pro",
        current_period_start=later_start, current_period_end=later_end,
    )  # fmt: skip
    assert_received(deliver(server, update), "applied")

    view = operator_view(server, practice_id)
    assert (view["plan"], view["included_usd"]) == ("upd-pro", "50.000000")
    assert (view["period_start"], view["period_end"]) == (later_start, later_end)


def test_the_period_is_read_from_the_item_when_the_subscription_has_none(server: Server) -> None:
    practice_id = practice_with_plans(server, ("item-period", "15"))
    subscription_id, (start, end) = new_id("sub"), current_period()
    payload = subscription_event(
        "created", subscription_id, practice_id, created=int(time.time()), lookup_key="item-period",
        current_period_start=start, current_period_end=end,
    )  # fmt: skip
    obj = payload["data"]["object"]
    del obj["current_period_start"], obj["current_period_end"]  # API 2025-03-31 and later

    assert_received(deliver(server, payload), "applied")

    view = operator_view(server, practice_id)
    assert (view["period_start"], view["period_end"], view["included_usd"]) == (start, end, "15.000000")


def test_an_older_event_arriving_late_is_acknowledged_but_never_rolls_back(server: Server) -> None:
    practice_id = practice_with_plans(server, ("late-basic", "20"), ("late-pro", "50"))
    subscription_id, created = new_id("sub"), int(time.time())
    older = subscription_event(
        "created", subscription_id, practice_id, created=created, lookup_key="late-basic", status="incomplete"
    )
    newer = subscription_event(
        "updated", subscription_id, practice_id, created=created + 5, lookup_key="late-pro"
    )

    assert_received(deliver(server, newer), "applied")
    late = deliver(server, older)

    assert late.status_code == 200
    assert late.json()["received"] is True
    assert recorded(server, older["id"])
    row = mirrored(server, subscription_id)
    assert (row.status, row.plan, row.updated_at) == ("active", "late-pro", created + 5)
    view = operator_view(server, practice_id)
    assert (view["subscription_id"], view["plan"], view["included_usd"]) == (
        subscription_id, "late-pro", "50.000000"
    )  # fmt: skip


def test_a_deleted_subscription_ends_access_and_a_late_update_does_not_bring_it_back(server: Server) -> None:
    practice_id = practice_with_plans(server, ("del-basic", "20"))
    subscription_id, created = new_id("sub"), int(time.time())
    for kind, status, offset in [("created", "active", 0), ("deleted", "canceled", 10)]:
        payload = subscription_event(
            kind,
            subscription_id,
            practice_id,
            created=created + offset,
            lookup_key="del-basic",
            status=status,
        )
        assert_received(deliver(server, payload), "applied")

    ended = operator_view(server, practice_id)
    late_update = subscription_event(
        "updated", subscription_id, practice_id, created=created + 5, lookup_key="del-basic"
    )
    assert_received(deliver(server, late_update), "applied")

    assert (ended["subscription_id"], ended["available_usd"]) == (None, "0.000000")
    assert operator_view(server, practice_id) == ended
    assert mirrored(server, subscription_id).status == "canceled"


@pytest.mark.parametrize(
    ("first", "late"),
    [
        pytest.param(("updated", "active"), ("created", "incomplete"), id="created after updated"),
        pytest.param(("deleted", "canceled"), ("updated", "active"), id="updated after deleted"),
    ],
)
def test_an_event_of_the_same_second_delivered_late_does_not_roll_back(
    server: Server, first: tuple[str, str], late: tuple[str, str]
) -> None:
    practice_id = practice_with_plans(server, ("tie-basic", "20"))
    subscription_id, created = new_id("sub"), int(time.time())
    for kind, status in (first, late):
        payload = subscription_event(
            kind, subscription_id, practice_id, created=created, lookup_key="tie-basic", status=status
        )
        assert_received(deliver(server, payload), "applied")

    assert mirrored(server, subscription_id).status == first[1]


def test_an_unknown_practice_is_refused_unrecorded_and_applied_once_it_exists(server: Server) -> None:
    practice_id, subscription_id = new_id("p"), new_id("sub")
    with server.budget() as budget:
        budget.put_plan("unknown-basic", included_usd="20")
    payload = subscription_event(
        "created", subscription_id, practice_id, created=int(time.time()), lookup_key="unknown-basic"
    )

    refused = deliver(server, payload)

    assert 400 <= refused.status_code < 500
    assert assert_problem(refused, refused.status_code)["error_code"] == "NOT_FOUND"
    assert not recorded(server, payload["id"])
    assert mirrored(server, subscription_id) is None

    with server.budget() as budget:
        budget.put_practice(practice_id, name="Praxis Spät")
    assert_received(deliver(server, payload), "applied")  # Stripe's retry, same event id
    assert_received(deliver(server, payload), "duplicate")
    assert operator_view(server, practice_id)["plan"] == "unknown-basic"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"metadata": {}}, "data.object.metadata.practice_id"),
        ({"metadata": {"practice_id": 7}}, "data.object.metadata.practice_id"),
        ({"metadata": "practice"}, "data.object.metadata"),
        ({"status": None}, "data.object.status"),
        ({"current_period_start": "soon"}, "data.object.current_period_start"),
    ],
)
def test_a_subscription_event_missing_what_it_needs_is_refused_and_unrecorded(
    server: Server, change: dict[str, Any], field: str
) -> None:
    practice_id, subscription_id = practice_with_plans(server), new_id("sub")
    payload = subscription_event("created", subscription_id, practice_id, created=int(time.time()))
    payload["data"]["object"].update(change)

    refused = deliver(server, payload)

    assert 400 <= refused.status_code < 500
    assert assert_problem(refused, refused.status_code)["field"] == field
    assert not recorded(server, payload["id"])
    assert mirrored(server, subscription_id) is None
