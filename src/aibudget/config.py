"""Settings: `AIBUDGET_*` environment variables over an optional `aibudget.toml`, validated once at start.

A bad value stops start-up with a `ConfigError` that names the variable and the value it had, so a
typo in a budget fails the deploy, not the first customer's call. Environment variables win over the
file; the file is `aibudget.toml` in the working directory or the path in `AIBUDGET_CONFIG_FILE`.
"""

from __future__ import annotations

import os
import secrets
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from aibudget.errors import ConfigError, InvalidInput
from aibudget.money import parse_usd, to_decimal

ENV_PREFIX = "AIBUDGET_"
SECRET_KEY_FILE = "secret_key"


def _exact_usd(value: object) -> Decimal:
    try:
        return to_decimal(parse_usd(value, field="amount"))
    except InvalidInput as exc:
        raise ValueError(exc.detail.removeprefix("amount: ")) from None


def _rate(value: object) -> Decimal:
    """A non-negative, finite price rate; unlike an amount it may have more than six places."""
    if isinstance(value, float | bool):
        raise ValueError(f"{value!r} must be written as a decimal string, not a {type(value).__name__}")
    try:
        rate = Decimal(str(value).strip())
    except ArithmeticError:
        raise ValueError(f"{value!r} is not a decimal number") from None
    if not rate.is_finite() or rate < 0:
        raise ValueError(f"{value!r} is not a finite, non-negative number")
    return rate


def _comma_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


USDAmount = Annotated[Decimal, BeforeValidator(_exact_usd)]
Rate = Annotated[Decimal, BeforeValidator(_rate)]
_SECRETS = (
    "secret_key",
    "admin_key",
    "stripe_api_key",
    "stripe_webhook_secret",
    "notify_secret",
    "upstream_api_key",
)


class CreditPackage(BaseModel):
    """Extra credit for sale: `credit_usd` of credit for a price in each currency it is sold in.

    Prices are decimal strings in the currency's major unit (`{"chf": "9.50", "eur": "9.90"}`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    package_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,40}$")]
    credit_usd: USDAmount
    prices: dict[Annotated[str, Field(pattern=r"^[a-z]{3}$")], USDAmount]

    @field_validator("prices")
    @classmethod
    def _some_price(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        if not value or any(price <= 0 for price in value.values()):
            raise ValueError("a package needs a positive price in at least one currency")
        return value

    @field_validator("credit_usd")
    @classmethod
    def _positive(cls, value: Decimal) -> Decimal:
        if value <= 0:
            raise ValueError("credit_usd must be more than 0")
        return value


DEFAULT_PACKAGES = tuple(
    CreditPackage(package_id=f"credit-{usd}", credit_usd=Decimal(usd), prices={"usd": Decimal(usd)})
    for usd in (10, 25, 50, 100)
)


class Settings(BaseSettings):
    """Every setting of aibudget; field `x` is variable `AIBUDGET_X` and key `x` in aibudget.toml."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, validate_default=True
    )

    data_dir: Path = Path("var")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<data_dir>/aibudget.sqlite3"
    )
    admin_key: SecretStr | None = Field(
        default=None, description="accepted as an admin API key (for automation); at least 32 characters"
    )
    secret_key: SecretStr | None = Field(
        default=None, description="keys device hashes; generated into <data_dir>/secret_key if unset"
    )
    default_included_usd: USDAmount = Decimal(20)
    price_overrides: Path | None = None
    unknown_model: Literal["fallback", "refuse"] = "fallback"
    fallback_input_usd_per_mtok: Rate = Decimal(5)
    fallback_output_usd_per_mtok: Rate = Decimal(15)
    fallback_audio_usd_per_minute: Rate = Decimal("0.02")
    default_provider: str = "openai"
    sqlite_synchronous: Literal["normal", "full"] = "normal"
    pool_size: int = Field(default=10, ge=1, le=1_000, description="PostgreSQL connections kept per process")
    pool_max_overflow: int = Field(default=10, ge=0, le=1_000, description="extra connections under load")
    hold_ttl_seconds: int = Field(default=600, ge=1, le=86_400)
    fail_open: bool = Field(
        default=False,
        description="admit authorizations while the database is unavailable (logged, counted and"
        " recorded; off: they are refused with 503)",
    )
    sweep_interval_seconds: int = Field(default=30, ge=1, le=3_600)
    default_max_output_tokens: int = Field(default=4096, ge=1, le=1_000_000)
    granting_statuses: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_list)] = (
        "active",
        "trialing",
    )

    # payments (Stripe): off until an API key is set
    stripe_api_key: SecretStr | None = Field(default=None, description="secret key for charges and Checkout")
    stripe_webhook_secret: SecretStr | None = Field(
        default=None, description="signing secret of the webhook endpoint (whsec_...)"
    )
    stripe_api_base: str = Field(default="https://api.stripe.com", description="Stripe's API address")
    stripe_timeout_seconds: float = Field(
        default=10, gt=0, le=80,
        description="how long one request to Stripe may take before it is tried again (twice at most)",
    )  # fmt: skip
    credit_packages: tuple[CreditPackage, ...] = Field(
        default=DEFAULT_PACKAGES, description="extra credit for sale (JSON list in the variable)"
    )
    checkout_success_url: str | None = Field(default=None, description="where Checkout returns after paying")
    checkout_cancel_url: str | None = Field(default=None, description="where Checkout returns on cancel")
    # the OpenAI-compatible proxy under /openai/v1
    upstream_base_url: str = Field(
        default="https://api.openai.com/v1", description="OpenAI-compatible API the proxy forwards to"
    )
    upstream_api_key: SecretStr | None = Field(default=None, description="the vendor's provider key")
    upstream_auth_header: Literal["authorization", "api-key"] = Field(
        default="authorization", description="`authorization` (Bearer, OpenAI) or `api-key` (Azure OpenAI)"
    )
    upstream_timeout_seconds: float = Field(default=600, gt=0, le=3_600)
    # outgoing notifications to the vendor's backend
    notify_url: str | None = Field(default=None, description="receiver of signed notifications (POST)")
    notify_secret: SecretStr | None = Field(
        default=None, description="signs notifications; at least 32 chars"
    )
    notify_thresholds: Annotated[tuple[int, ...], NoDecode, BeforeValidator(_comma_list)] = (80, 100)
    notify_interval_seconds: float = Field(default=2, gt=0, le=3_600)
    notify_max_attempts: int = Field(default=12, ge=1, le=100)

    @field_validator("notify_thresholds")
    @classmethod
    def _percentages(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(not 1 <= percent <= 100 for percent in value):
            raise ValueError("thresholds are percentages consumed, 1-100")
        return tuple(sorted(set(value)))

    @field_validator("credit_packages")
    @classmethod
    def _unique_packages(cls, value: tuple[CreditPackage, ...]) -> tuple[CreditPackage, ...]:
        ids = [package.package_id for package in value]
        if len(set(ids)) != len(ids):
            raise ValueError("package ids must be unique")
        return value

    @field_validator(
        "stripe_api_base", "notify_url", "checkout_success_url", "checkout_cancel_url", "upstream_base_url"
    )
    @classmethod
    def _http_address(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("expected an http:// or https:// address")
        return value

    @field_validator("price_overrides")
    @classmethod
    def _overrides_file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @field_validator("secret_key", "admin_key", "notify_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite://", "postgresql")):
            raise ValueError("expected sqlite:///PATH or postgresql+psycopg://USER@HOST/DB")
        return value

    @field_validator("granting_statuses")
    @classmethod
    def _some_status(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one subscription status must grant AI access")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get(f"{ENV_PREFIX}CONFIG_FILE", "aibudget.toml"))
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file))

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Read and validate the settings, or raise one `ConfigError` listing every bad value."""
        try:
            return cls(**overrides)
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                name = ".".join(str(part) for part in error["loc"])
                shown = "<hidden>" if name in _SECRETS else repr(error.get("input"))
                message = error["msg"].removeprefix("Value error, ")
                problems.append(f"{ENV_PREFIX}{name.upper()}={shown}: {message}")
            raise ConfigError("invalid configuration: " + "; ".join(problems)) from None

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'aibudget.sqlite3'}"

    def secret(self) -> bytes:
        """The server secret; generated once into `<data_dir>/secret_key` (mode 0600) when unset."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        path = self.data_dir / SECRET_KEY_FILE
        if not path.exists():
            # Written aside and linked into place, so two processes starting at once agree on one key
            # and neither ever reads a half-written file.
            self.data_dir.mkdir(parents=True, exist_ok=True)
            draft = path.with_name(f".{SECRET_KEY_FILE}.{os.getpid()}")
            fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, secrets.token_hex(32).encode())
            finally:
                os.close(fd)
            try:
                os.link(draft, path)
            except FileExistsError:
                pass  # another process linked its key first; that one is the key
            finally:
                draft.unlink()
        key = path.read_text().strip()
        if len(key) < 32:
            raise ConfigError(f"{path} holds a secret shorter than 32 characters")
        return key.encode()
