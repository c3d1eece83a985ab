"""A database that refuses work fails the call with `DatabaseUnavailable` (503) and records nothing;
an error of the request itself stays what it is. SQLite here: a file opened read-only refuses every
write with SQLITE_READONLY, as a full disk or a read-only mount would. (PostgreSQL going away is
tested end to end in tests/api/test_database_unavailable.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import OperationalError

from aibudget import Budget, Settings
from aibudget.errors import DatabaseUnavailable
from aibudget.store import tables
from aibudget.store.dialect import install_sqlite_transactions, run_transaction
from tests.factories import open_practice


def test_a_read_only_database_file_refuses_writes_with_database_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "var" / "aibudget.sqlite3"
    with Budget.open(f"sqlite:///{path}", settings=Settings.load(data_dir=tmp_path / "var")) as budget:
        open_practice(budget, "p1")
    read_only = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    install_sqlite_transactions(read_only)
    with Budget(read_only, Settings.load(data_dir=tmp_path / "var")) as budget:
        with pytest.raises(DatabaseUnavailable) as refused:
            budget.settle(practice_id="p1", request_id="r1", model="gpt-4o-mini", input_tokens=1000)
        assert refused.value.http_status == 503
        assert isinstance(refused.value.__cause__, OperationalError)
    with Budget.open(f"sqlite:///{path}", settings=Settings.load(data_dir=tmp_path / "var")) as budget:
        with budget.engine.connect() as connection:
            assert connection.execute(select(func.count()).select_from(tables.usage_events)).scalar() == 0
        assert budget.settle(practice_id="p1", request_id="r1", model="gpt-4o-mini", input_tokens=1000)
        assert budget.verify() == []


def test_an_error_of_the_statement_itself_is_not_called_unavailable(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'plain.sqlite3'}")
    install_sqlite_transactions(engine)
    with pytest.raises(OperationalError, match="no such table"):
        run_transaction(
            engine, lambda connection: connection.execute(text("SELECT * FROM nowhere")), write=False
        )
