"""Dashboard sessions: who may sign in, how long a session lives, what ends it — through the library,
and for the environment's admin key across server restarts, over real HTTP."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from aibudget import Budget, Settings
from aibudget.auth.service import ENV_ADMIN, Unauthorized, secret_hash
from aibudget.store import tables
from aibudget.store.dialect import write_transaction
from aibudget.store.engine import open_engine, upgrade
from tests.api.conftest import Server, start_server, stop_server
from tests.conftest import FakeClock
from tests.databases import server_databases
from tests.factories import create_practice

SESSION_COOKIE = "aibudget_session"
TO_SIGN_IN = (303, "/admin/sign-in?next=%2Fadmin")


def test_an_admin_key_opens_a_session_that_knows_its_csrf_token(budget: Budget) -> None:
    key, text = budget.create_key(role="admin")
    session = budget.sign_in(text)
    found = budget.dashboard_session(session.token)
    assert found is not None
    assert found.key_id == key.key_id
    assert found.accepts(session.csrf_token)
    assert not any(found.accepts(other) for other in ("another", None, ""))
    assert text not in (session.token, session.csrf_token)


@pytest.mark.parametrize("role", ["service", "practice"])
def test_only_admin_keys_sign_in(budget: Budget, role: str) -> None:
    create_practice(budget, "p1")
    _key, text = budget.create_key(role=role, practice_id="p1" if role == "practice" else None)
    with pytest.raises(Unauthorized):
        budget.sign_in(text)


def test_unknown_keys_and_tokens_sign_nobody_in(budget: Budget) -> None:
    with pytest.raises(Unauthorized):
        budget.sign_in("aib_0123456789abcdef_" + "x" * 43)
    assert budget.dashboard_session(None) is None
    assert budget.dashboard_session("") is None
    assert budget.dashboard_session("not-a-session") is None


def test_a_session_expires_after_twelve_hours(budget: Budget, clock: FakeClock) -> None:
    _key, text = budget.create_key(role="admin")
    session = budget.sign_in(text)
    clock.advance(hours=11, minutes=59)
    assert budget.dashboard_session(session.token) is not None
    clock.advance(minutes=1)
    assert budget.dashboard_session(session.token) is None


def test_signing_out_and_revoking_the_key_end_sessions(budget: Budget) -> None:
    key, text = budget.create_key(role="admin")
    first, second = budget.sign_in(text), budget.sign_in(text)
    budget.sign_out(first.token)
    assert budget.dashboard_session(first.token) is None
    assert budget.dashboard_session(second.token) is not None
    budget.revoke_key(key.key_id)
    assert budget.dashboard_session(second.token) is None


def test_a_session_of_the_environment_admin_key_ends_when_it_is_unset(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    admin = "a-long-admin-key-from-the-environment-0123456789"
    with_key = Settings.load(data_dir=tmp_path / "var", admin_key=admin)
    with Budget.open(database_url, settings=with_key, clock=clock) as budget:
        session = budget.sign_in(admin)
        assert budget.dashboard_session(session.token) is not None
    with Budget.open(database_url, settings=Settings.load(data_dir=tmp_path / "var"), clock=clock) as budget:
        assert budget.dashboard_session(session.token) is None


@contextmanager
def serving(data_dir: Path, database: str | None, admin_key: str) -> Iterator[Server]:
    """A server over `data_dir` (and `database`) with `AIBUDGET_ADMIN_KEY=admin_key`."""
    server = start_server(data_dir, database, AIBUDGET_ADMIN_KEY=admin_key)
    try:
        yield server
    finally:
        stop_server(server)


def signed_in(server: Server, admin_key: str) -> tuple[str, str]:
    """Sign in through the form, as a browser does: the session cookie's token and the CSRF token of
    the session's forms."""
    with httpx.Client(base_url=server.url, timeout=10) as browser:
        form = browser.get("/admin/sign-in")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token is not None
        answer = browser.post("/admin/sign-in", data={"admin_key": admin_key, "csrf_token": token[1]})
        assert answer.status_code == 303, answer.text
        overview = browser.get("/admin")
        assert overview.status_code == 200
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', overview.text)
        assert csrf is not None
        return browser.cookies[SESSION_COOKIE], csrf[1]


def with_session(server: Server, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, cookies={SESSION_COOKIE: token}, timeout=10)


def test_changing_the_environment_admin_key_ends_the_sessions_the_old_key_opened(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """A leaked `AIBUDGET_ADMIN_KEY` is rotated by restarting the server with a new one: the sessions
    the old key opened end with it, as those of a revoked stored key do. A restart with the same key
    keeps them."""
    data_dir = tmp_path / "var"
    old_key, new_key = "old-admin-key-" + "a" * 40, "new-admin-key-" + "b" * 40
    for database in server_databases(backend, request):
        with serving(data_dir, database, old_key) as server:
            old_session, csrf = signed_in(server, old_key)
            with server.budget() as budget:
                create_practice(budget, "p1")

        with serving(data_dir, database, old_key) as server, with_session(server, old_session) as browser:
            assert browser.get("/admin").status_code == 200

        with serving(data_dir, database, new_key) as server:
            with with_session(server, old_session) as browser:
                answer = browser.get("/admin")
                assert (answer.status_code, answer.headers.get("location")) == TO_SIGN_IN
                form = {"csrf_token": csrf, "amount_usd": "500", "reference": "with-the-old-key"}
                answer = browser.post("/admin/practices/p1/grants", data=form)
                assert (answer.status_code, answer.headers.get("location")) == TO_SIGN_IN
            assert server.client(old_key).get("/v1/keys").status_code == 401
            new_session, _csrf = signed_in(server, new_key)
            with with_session(server, new_session) as browser:
                assert browser.get("/admin").status_code == 200
            with server.budget() as budget:
                assert budget.grants("p1") == []


def test_sessions_of_the_environment_admin_key_from_before_their_key_was_kept_end(
    empty_database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    """Sessions opened with `AIBUDGET_ADMIN_KEY` before migration 0009 cannot tell which key opened
    them, so the migration ends them; those of stored keys go on."""
    engine = open_engine(empty_database_url, migrate=False)
    upgrade(engine, "0008")
    stored_key = "aib_0123456789abcdef_" + "s" * 43
    with write_transaction(engine) as connection:
        connection.execute(
            tables.api_keys.insert().values(
                key_id="0123456789abcdef", key_hash=secret_hash(stored_key), role="admin", created_at=clock()
            )
        )
        for token, key_id in (("env-session", ENV_ADMIN), ("stored-session", "0123456789abcdef")):
            session = {"session_hash": secret_hash(token), "key_id": key_id, "csrf_token": f"csrf-{token}",
                       "created_at": clock(), "expires_at": clock() + timedelta(hours=1)}  # fmt: skip
            connection.execute(tables.admin_sessions.insert().values(session))
    engine.dispose()
    admin = "a-long-admin-key-from-the-environment-0123456789"
    settings = Settings.load(data_dir=tmp_path / "var", admin_key=admin)
    with Budget.open(empty_database_url, settings=settings, clock=clock) as budget:
        assert budget.dashboard_session("env-session") is None
        assert budget.dashboard_session("stored-session") is not None
        assert budget.dashboard_session(budget.sign_in(admin).token) is not None
