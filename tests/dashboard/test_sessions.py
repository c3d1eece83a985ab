"""Dashboard sessions through the library: who may sign in, how long a session lives, what ends it."""

from __future__ import annotations

from pathlib import Path

import pytest

from aibudget import Budget, Settings
from aibudget.auth.service import Unauthorized
from tests.conftest import FakeClock
from tests.factories import create_practice


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
