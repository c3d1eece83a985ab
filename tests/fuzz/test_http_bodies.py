"""Fuzzing HTTP request bodies (SPEC §5 G6, §11): bad input is a clear 4xx, never a 5xx, never a write.

A real server per engine (the API tests' `server`) gets, on each route that writes — authorize,
settle, void, the practice, plan and subscription PUTs, credit grants and the auto top-up PUT —
bodies of three kinds: a valid body mutated one to three times (a field replaced by a value of the
wrong type, a huge or negative number, unicode, control and NUL characters, a lone surrogate, a very
long string, a float for money; a field dropped; an unknown field added, at any depth), arbitrary
JSON, and bytes that are not JSON at all; sometimes with a device header, a key of the wrong role
or practice, or no key. Every answer is below 500; every 4xx is `application/problem+json` with an
`error_code` and its status, and a 422 names a `field`; after anything but a success, what the
route could have changed is exactly as before (the practices' money, grants, settings). When a
route's run ends the books balance (`Budget.verify() == []`) and the server logged no traceback.

Each example is an HTTP round trip, so each route gets 150 of them; Hypothesis shrinks a failure to
its smallest body.
"""

from __future__ import annotations

import string
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aibudget import Budget, NotFound
from tests.api.conftest import Server
from tests.fuzz.bodies import Body, bodies

PROBLEM_JSON = "application/problem+json"
GATE, OTHER, ACCOUNTS, CREDIT, TOPUP = "fz-gate", "fz-other", "fz-accounts", "fz-credit", "fz-topup"
NEW = "fz-new"  # a practice only a successful PUT creates
DEVICE = "fz-device-1"
HELD = ("held-1", "held-2", "held-3", "held-4", "held-5")  # holds the void route can release
EXAMPLES = 150
ALNUM = string.ascii_letters + string.digits

bounded = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


@dataclass(frozen=True)
class Keys:
    admin: str
    service: str
    gate: str  # a practice key of GATE
    other: str  # a practice key of OTHER


@dataclass
class World:
    server: Server
    keys: Keys
    budget: Budget  # the server's database through the library, to read the books
    http: httpx.Client


@pytest.fixture(scope="module")
def world(server: Server) -> Iterator[World]:
    """Practices with money for the routes to work on, the keys of every role, and a client."""
    budget = server.budget()
    now = int(time.time())
    budget.put_plan("fz-basic", included_usd="5")
    for practice in (GATE, OTHER, ACCOUNTS, CREDIT, TOPUP):
        budget.put_practice(practice, name=f"Praxis {practice}")
        budget.put_subscription(  # OTHER's is canceled: an authorization there is a 402
            f"sub-{practice}", practice_id=practice, plan="fz-basic",
            status="canceled" if practice == OTHER else "active",
            current_period_start=now - 86_400, current_period_end=now + 29 * 86_400,
        )  # fmt: skip
        budget.grant_credit(practice, amount_usd="3", source="manual", reference=f"gift-{practice}")
    budget.bind_device(DEVICE, practice_id=GATE)
    for request_id in HELD:
        budget.authorize(practice_id=GATE, request_id=request_id, operation="letter", model="gpt-4o-mini",
                         input_tokens=100)  # fmt: skip
    keys = Keys(
        admin=server.admin_key,
        service=budget.create_key(role="service", label="fuzz")[1],
        gate=budget.create_key(role="practice", practice_id=GATE, label="fuzz")[1],
        other=budget.create_key(role="practice", practice_id=OTHER, label="fuzz")[1],
    )
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield World(server, keys, budget, http)
    budget.close()


# --- sending and judging ------------------------------------------------------------------------


def send(world: World, method: str, path: str, body: Body, key: str | None, **headers: str) -> httpx.Response:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if body.content_type is not None:
        headers["Content-Type"] = body.content_type
    return world.http.request(method, path, content=body.content, headers=headers)


def assert_answer(response: httpx.Response) -> None:
    """Below 500; a 4xx is problem+json with an error code and its status; a 422 names a field."""
    request = f"{response.request.method} {response.request.url.raw_path!r}"
    assert response.status_code < 500, f"{request} -> {response.status_code}: {response.text[:2000]}"
    if response.status_code >= 400:
        assert response.headers["content-type"] == PROBLEM_JSON, (request, response.headers, response.text)
        problem = response.json()
        assert isinstance(problem.get("error_code"), str), problem
        assert problem["error_code"], problem
        assert problem["status"] == response.status_code, problem
        assert {"type", "title", "detail"} <= problem.keys(), problem
        if response.status_code == 422:
            assert isinstance(problem.get("field"), str), problem
            assert problem["field"], problem
    else:
        assert response.headers.get("content-type") == "application/json", (request, response.status_code)
        response.json()


def fuzz(world: World, state: Callable[[], Any], call: Callable[[], httpx.Response]) -> None:
    """Send one request; unless it succeeded, what the route could touch must be as it was."""
    before = state()
    response = call()
    assert_answer(response)
    if response.status_code >= 300:
        assert state() == before, f"a {response.status_code} changed the books: {response.text[:500]}"


def assert_books_balance(world: World) -> None:
    assert world.budget.verify() == []
    assert "Traceback" not in world.server.logs()


def money(budget: Budget, *practices: str) -> list[tuple[int, ...]]:
    snapshots = [budget.snapshot(practice) for practice in practices]
    return [
        (s.used_micros, s.held_micros, s.included_remaining_micros, s.extra_credit_remaining_micros,
         s.overage_micros)
        for s in snapshots
    ]  # fmt: skip


# --- the gate: authorize, settle, void ----------------------------------------------------------

request_ids = st.sampled_from(["r-1", "r-2", "r-3", *HELD]) | st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12
)
models = st.sampled_from(["gpt-4o-mini", "whisper-1", "gpt-4o-transcribe", "unknown-model-x"])
counts = st.integers(0, 5000)
estimates = st.fixed_dictionaries(
    {},
    optional={
        "input_tokens": counts,
        "prompt_chars": counts,
        "max_output_tokens": counts,
        "audio_seconds": st.sampled_from(["0", "1.5", "60", 12, 0]),
    },
)
practices = st.sampled_from([GATE, GATE, GATE, OTHER, "fz-missing"])
authorize_bodies = st.fixed_dictionaries(
    {
        "practice_id": practices,
        "request_id": request_ids,
        "operation": st.sampled_from(["letter", "dictation"]),
        "model": models,
    },
    optional={"estimate": estimates},
)
usages = st.fixed_dictionaries(
    {},
    optional={
        "input_tokens": st.integers(1000, 5000),
        "cached_input_tokens": st.integers(0, 500),
        "output_tokens": counts,
        "input_audio_tokens": st.integers(0, 500),
        "audio_seconds": st.sampled_from(["0", "2.5", 30, 0]),
    },
)
settle_bodies = st.fixed_dictionaries(
    {"practice_id": practices, "request_id": request_ids, "model": models},
    optional={
        "operation": st.sampled_from(["letter", "dictation"]),
        "status": st.sampled_from(["success", "error"]),
        "usage": usages,
        "error_code": st.sampled_from(["timeout", "rate_limited"]),
        "meta": st.dictionaries(
            st.sampled_from(["feature", "app_version", "email", "ref"]),
            st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=20)),
            max_size=3,
        ),
        "estimated": st.booleans(),
    },
)
void_bodies = st.fixed_dictionaries({"practice_id": practices})


@st.composite
def gate_headers(draw: st.DrawFn, world: World) -> tuple[str | None, dict[str, str]]:
    """Mostly the service key; sometimes a practice key, of this practice or another, or none; a
    device now and then, bound, unknown or malformed."""
    keys = world.keys
    key = draw(st.sampled_from([keys.service] * 8 + [keys.gate, keys.other, keys.admin, None, "aib_nope"]))
    headers = {}
    if draw(st.integers(0, 4)) == 0:
        headers["X-Device-Id"] = draw(
            st.sampled_from([DEVICE, "fz-unknown-device", "a b", "a" * 300, "a\tb"])
        )
    return key, headers


def test_authorize_answers_any_body_with_a_hold_a_refusal_or_a_clear_4xx(world: World) -> None:
    @bounded
    @given(body=bodies(authorize_bodies), auth=gate_headers(world))
    def run(body: Body, auth: tuple[str | None, dict[str, str]]) -> None:
        key, headers = auth
        fuzz(
            world,
            lambda: money(world.budget, GATE, OTHER),
            lambda: send(world, "POST", "/v1/authorizations", body, key, **headers),
        )

    run()
    assert_books_balance(world)


def test_settle_answers_any_body_with_a_charge_or_a_clear_4xx(world: World) -> None:
    @bounded
    @given(body=bodies(settle_bodies), auth=gate_headers(world))
    def run(body: Body, auth: tuple[str | None, dict[str, str]]) -> None:
        key, headers = auth
        fuzz(
            world,
            lambda: money(world.budget, GATE, OTHER),
            lambda: send(world, "POST", "/v1/usage", body, key, **headers),
        )

    run()
    assert_books_balance(world)


def test_void_answers_any_request_id_and_body_with_a_release_or_a_clear_4xx(world: World) -> None:
    @bounded
    @given(
        request_id=request_ids | st.text(max_size=20),
        body=bodies(void_bodies) | st.just(Body(b"", None)),
        auth=gate_headers(world),
    )
    def run(request_id: str, body: Body, auth: tuple[str | None, dict[str, str]]) -> None:
        key, headers = auth
        path = f"/v1/authorizations/{quote(request_id, safe='')}/void"
        fuzz(
            world,
            lambda: money(world.budget, GATE, OTHER),
            lambda: send(world, "POST", path, body, key, **headers),
        )

    run()
    assert_books_balance(world)


# --- accounts: practices, plans, subscriptions ----------------------------------------------------

# Valid bodies: the mutations, arbitrary JSON and `path_ids` bring the invalid ones.
texts = st.text(st.characters(codec="utf-8", exclude_categories=["C"]), min_size=1, max_size=30)
practice_bodies = st.fixed_dictionaries(
    {},
    optional={
        "name": texts,
        "locale": st.sampled_from(["de-CH", "fr-CH", "it-CH", "en-GB"]),
        "timezone": st.sampled_from(["Europe/Zurich", "UTC", "America/New_York"]),
        "policy": st.sampled_from(["strict", "allow_last_call"]),
        "warning_percent": st.integers(0, 100),
    },
)
plan_bodies = st.fixed_dictionaries(
    {"included_usd": st.sampled_from(["5", "20.00", 7, "0", "0.000001", "1000000"])}
)
NOW = int(time.time())


@st.composite
def periods(draw: st.DrawFn) -> dict[str, int]:
    start = draw(st.integers(NOW - 60 * 86_400, NOW))
    return {"current_period_start": start, "current_period_end": start + draw(st.integers(1, 60 * 86_400))}


subscription_bodies = st.tuples(
    st.fixed_dictionaries(
        {"practice_id": st.just(ACCOUNTS), "status": st.sampled_from(["active", "canceled", "past_due"])},
        optional={
            "plan": st.sampled_from(["fz-basic", "fz-unknown-plan"]),
            "customer_id": texts,
            "customer_email": st.sampled_from(["a@example.ch", "x"]),
            "updated_at": st.integers(NOW - 86_400, NOW + 86_400),
        },
    ),
    st.just({}) | periods(),
).map(lambda parts: parts[0] | parts[1])
path_ids = st.text(max_size=20)


def ids_or_any(*known: str) -> st.SearchStrategy[str]:
    """Mostly ids that exist (or may be created), sometimes any text at all."""
    return st.sampled_from(known * 3) | path_ids


def accounts_state(world: World) -> tuple[Any, ...]:
    """The practice, a practice a PUT may create, and the budget its subscription and plan give."""
    try:
        new = world.budget.get_practice(NEW)
    except NotFound:
        new = None
    return world.budget.get_practice(ACCOUNTS), new, world.budget.snapshot(ACCOUNTS).as_json()


@st.composite
def admin_key(draw: st.DrawFn, world: World) -> str | None:
    """Mostly the admin key; sometimes a key of a role that may not, or none."""
    keys = world.keys
    return draw(st.sampled_from([keys.admin] * 10 + [keys.service, keys.gate, None]))


@pytest.mark.parametrize(
    ("route", "ids", "valid"),
    [
        pytest.param("/v1/practices/{}", ids_or_any(ACCOUNTS, NEW), practice_bodies, id="practice"),
        pytest.param("/v1/plans/{}", ids_or_any("fz-basic", "fz-pro"), plan_bodies, id="plan"),
        pytest.param(
            "/v1/subscriptions/{}", ids_or_any(f"sub-{ACCOUNTS}"), subscription_bodies, id="subscription"
        ),
    ],
)
def test_account_puts_answer_any_body_with_the_stored_record_or_a_clear_4xx(
    world: World, route: str, ids: st.SearchStrategy[str], valid: st.SearchStrategy[dict[str, Any]]
) -> None:
    @bounded
    @given(target=ids, body=bodies(valid), key=admin_key(world))
    def run(target: str, body: Body, key: str | None) -> None:
        path = route.format(quote(target, safe=""))
        fuzz(world, lambda: accounts_state(world), lambda: send(world, "PUT", path, body, key))

    run()
    assert_books_balance(world)


# --- credit: grants and automatic top-up ----------------------------------------------------------

usd = st.sampled_from(["10", "12.50", 25, "0.01", "1000000"])
grant_bodies = st.fixed_dictionaries(
    {
        "amount_usd": usd | st.just("0.000001"),
        "source": st.sampled_from(["manual", "promo", "purchase", "refund"]),
        "reference": st.sampled_from(["fz-ref-1", "fz-ref-2"]) | st.text(ALNUM, min_size=1, max_size=12),
    },
    optional={
        "expires_at": st.sampled_from(["2099-01-01T00:00:00Z", "2099-01-01T00:00:00+01:00"]),
        "priority": st.integers(0, 10),
    },
)
topup_bodies = st.tuples(
    st.fixed_dictionaries(
        {
            "enabled": st.booleans(),
            "package_usd": usd,
            "monthly_max_count": st.integers(0, 5),
            "monthly_max_usd": usd,
        }
    ),
    st.fixed_dictionaries({"threshold_usd": usd})
    | st.fixed_dictionaries({"threshold_percent": st.integers(0, 100)}),
).map(lambda parts: parts[0] | parts[1])


def grants_state(world: World) -> list[tuple[int, str, int]]:
    """The grants themselves: a sweep may retire expired credit meanwhile, which no request did."""
    return [(grant.grant_id, grant.reference, grant.amount_micros) for grant in world.budget.grants(CREDIT)]


def test_credit_grants_answer_any_body_with_one_grant_or_a_clear_4xx(world: World) -> None:
    @bounded
    @given(
        target=ids_or_any(CREDIT, CREDIT, "fz-missing"),
        body=bodies(grant_bodies),
        key=admin_key(world),
    )
    def run(target: str, body: Body, key: str | None) -> None:
        path = f"/v1/practices/{quote(target, safe='')}/credits"
        fuzz(world, lambda: grants_state(world), lambda: send(world, "POST", path, body, key))

    run()
    assert_books_balance(world)


def test_auto_topup_answers_any_body_with_the_settings_or_a_clear_4xx(world: World) -> None:
    @bounded
    @given(
        target=ids_or_any(TOPUP, TOPUP, "fz-missing", OTHER),
        body=bodies(topup_bodies),
        key=admin_key(world),
    )
    def run(target: str, body: Body, key: str | None) -> None:
        path = f"/v1/practices/{quote(target, safe='')}/auto-topup"
        fuzz(
            world,
            lambda: (world.budget.auto_topup(TOPUP), world.budget.auto_topup(OTHER)),
            lambda: send(world, "PUT", path, body, key),
        )

    run()
    assert_books_balance(world)
