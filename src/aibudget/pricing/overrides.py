"""The operator's price overrides file (TOML): aliases onto catalog models and custom prices.

```toml
[aliases]                          # a name the catalog lacks -> a model the catalog has
"prod-gpt4o-deployment" = "gpt-4o"
"gpt-4o-mini-2099-01-01" = "gpt-4o-mini"

[models."praxis-llm"]              # a model priced by hand, USD
input_mtok = "0.40"                # per 1M input tokens
cache_read_mtok = "0.10"           # per 1M cached input tokens
output_mtok = "1.60"               # per 1M output tokens
input_audio_mtok = "6"             # per 1M input audio tokens
audio_minute = "0.006"             # per minute of audio (a per-minute model)
```

Names match case-insensitively. The file is read once at start; any mistake is a `ConfigError`
naming the file, the entry and the value. Its version is the SHA-256 of its bytes, stored with every
event it priced.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from genai_prices.types import ModelPrice

from aibudget.errors import ConfigError

# Override keys -> (genai-prices price key, factor from the override's unit to genai-prices' unit).
_PRICE_KEYS: dict[str, tuple[str, Decimal]] = {
    "input_mtok": ("input_mtok", Decimal(1)),
    "cache_read_mtok": ("cache_read_mtok", Decimal(1)),
    "output_mtok": ("output_mtok", Decimal(1)),
    "input_audio_mtok": ("input_audio_mtok", Decimal(1)),
    "audio_minute": ("audio_hours", Decimal(60)),
}


@dataclass(frozen=True, slots=True)
class Overrides:
    """Parsed overrides: lower-cased names to an alias target or to a custom price."""

    version: str = "none"
    aliases: dict[str, str] = field(default_factory=dict)
    prices: dict[str, ModelPrice] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None) -> Overrides:
        if path is None:
            return cls()
        raw = path.read_bytes()
        try:
            data = tomllib.loads(raw.decode(), parse_float=Decimal)
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"price overrides {path}: not valid TOML ({exc})") from None
        unknown = data.keys() - {"aliases", "models"}
        if unknown:
            raise ConfigError(f"price overrides {path}: unknown tables {sorted(unknown)}")
        aliases = {
            name.lower(): _alias_target(path, name, target)
            for name, target in data.get("aliases", {}).items()
        }
        prices = {
            name.lower(): _model_price(path, name, entry) for name, entry in data.get("models", {}).items()
        }
        both = aliases.keys() & prices.keys()
        if both:
            raise ConfigError(f"price overrides {path}: {sorted(both)} are both alias and priced model")
        return cls(f"overrides sha256:{hashlib.sha256(raw).hexdigest()[:16]}", aliases, prices)


def _alias_target(path: Path, name: str, target: object) -> str:
    if not isinstance(target, str) or not target.strip():
        raise ConfigError(f"price overrides {path}: aliases.{name} = {target!r} must name a model")
    return target.strip()


def _model_price(path: Path, name: str, entry: object) -> ModelPrice:
    if not isinstance(entry, dict) or not entry:
        raise ConfigError(f"price overrides {path}: models.{name} must be a table of prices")
    prices: dict[str, Decimal] = {}
    for key, value in entry.items():
        if key not in _PRICE_KEYS:
            raise ConfigError(
                f"price overrides {path}: models.{name}.{key} is not one of {sorted(_PRICE_KEYS)}"
            )
        amount = _price(value)
        if amount is None:
            raise ConfigError(
                f"price overrides {path}: models.{name}.{key} = {value!r} is not a finite price >= 0"
            )
        price_key, factor = _PRICE_KEYS[key]
        prices[price_key] = amount * factor
    return ModelPrice(**prices)


def _price(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        return None
    try:
        amount = Decimal(value)
    except ArithmeticError:
        return None
    return amount if amount.is_finite() and amount >= 0 else None
