"""Settings are read once at start; a bad value stops start-up naming the variable and the value."""

from __future__ import annotations

import multiprocessing
import stat
from decimal import Decimal
from pathlib import Path

import pytest

from aibudget.config import Settings
from aibudget.errors import ConfigError


def test_defaults_match_the_documentation() -> None:
    settings = Settings.load()
    assert settings.resolved_database_url == "sqlite:///var/aibudget.sqlite3"
    assert settings.data_dir == Path("var")
    assert settings.default_included_usd == Decimal(20)
    assert settings.unknown_model == "fallback"
    assert settings.granting_statuses == ("active", "trialing")


def test_environment_variables_override_the_toml_file(monkeypatch: pytest.MonkeyPatch) -> None:
    Path("aibudget.toml").write_text('default_included_usd = "30"\nunknown_model = "refuse"\n')
    monkeypatch.setenv("AIBUDGET_DEFAULT_INCLUDED_USD", "12.50")
    settings = Settings.load()
    assert settings.default_included_usd == Decimal("12.50")
    assert settings.unknown_model == "refuse"


def test_granting_statuses_accept_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIBUDGET_GRANTING_STATUSES", "active, trialing, past_due")
    assert Settings.load().granting_statuses == ("active", "trialing", "past_due")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AIBUDGET_DEFAULT_INCLUDED_USD", "20 USD"),
        ("AIBUDGET_DEFAULT_INCLUDED_USD", "inf"),
        ("AIBUDGET_DEFAULT_INCLUDED_USD", "nan"),
        ("AIBUDGET_DEFAULT_INCLUDED_USD", "-5"),
        ("AIBUDGET_DEFAULT_INCLUDED_USD", "0.0000001"),
        ("AIBUDGET_UNKNOWN_MODEL", "maybe"),
        ("AIBUDGET_FALLBACK_INPUT_USD_PER_MTOK", "-1"),
        ("AIBUDGET_PRICE_OVERRIDES", "/nonexistent/prices.toml"),
        ("AIBUDGET_DATABASE_URL", "mysql://x"),
        ("AIBUDGET_GRANTING_STATUSES", " , "),
    ],
)
def test_bad_values_stop_start_up_naming_variable_and_value(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        Settings.load()
    assert variable in caught.value.detail
    assert repr(value.strip()) in caught.value.detail or repr(value) in caught.value.detail


def test_a_bad_value_in_the_toml_file_is_named_too() -> None:
    Path("aibudget.toml").write_text('default_included_usd = "twenty"\n')
    with pytest.raises(ConfigError, match="DEFAULT_INCLUDED_USD='twenty'"):
        Settings.load()


def test_unknown_settings_are_refused_not_ignored() -> None:
    Path("aibudget.toml").write_text('default_included = "20"\n')
    with pytest.raises(ConfigError, match="DEFAULT_INCLUDED"):
        Settings.load()


def test_a_short_secret_is_refused_without_being_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIBUDGET_SECRET_KEY", "hunter2")
    with pytest.raises(ConfigError) as caught:
        Settings.load()
    assert "AIBUDGET_SECRET_KEY" in caught.value.detail
    assert "hunter2" not in caught.value.detail


def test_the_secret_is_generated_once_private_and_stable(tmp_path: Path) -> None:
    settings = Settings.load(data_dir=tmp_path / "var")
    first = settings.secret()
    path = tmp_path / "var" / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Settings.load(data_dir=tmp_path / "var").secret() == first
    assert len(first) >= 32


def _secret_in(directory: str) -> bytes:
    return Settings.load(data_dir=Path(directory)).secret()


def test_processes_starting_at_once_agree_on_one_secret(tmp_path: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        secrets = pool.map(_secret_in, [str(tmp_path / "var")] * 8)
    assert len(set(secrets)) == 1
    assert sorted(p.name for p in (tmp_path / "var").iterdir()) == ["secret_key"]
