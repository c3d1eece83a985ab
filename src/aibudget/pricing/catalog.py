"""What a call cost: model names resolved to prices (overrides, genai-prices, fallback), cached.

Resolution order for a model name, first match wins:

1. the operator's overrides file: a custom price, or an alias onto a catalog model;
2. the genai-prices catalog, by the name as sent (the catalog knows many dated ids itself);
3. the catalog again after stripping a provider prefix (`openai/`) and a `-YYYY-MM-DD` suffix;
4. the fallback: a conservative configured price, or refusal (`UnknownModel`) if so configured.

Every result carries `source` and `version`, so a stored cost can be recomputed later.

Audio is charged in the unit the model is priced in, never twice: a per-minute model by
`audio_seconds` (its audio tokens are then not also charged as input), a per-audio-token model by
`input_audio_tokens` (when only seconds are known, they are converted at OpenAI's published rate and
the result says so). Token counts follow OpenAI's usage: `input_tokens` includes cached and audio
input tokens; `output_tokens` includes reasoning tokens.

Speed: a raw catalog call costs ~100 µs. Resolution is cached per model name, and for prices without
tiers the catalog is asked once for per-unit coefficients; pricing a call is then a handful of
`Decimal` multiplications. Since genai-prices decomposes usage linearly, the coefficients give the
catalog's own result exactly (a test compares the two across the catalog).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Literal

import genai_prices
from genai_prices import data_snapshot
from genai_prices.types import ModelInfo, ModelPrice, Provider, TieredPrices

from aibudget.config import Settings
from aibudget.errors import ConfigError, InvalidInput, UnknownModel
from aibudget.money import cost_to_micros, to_decimal
from aibudget.pricing.overrides import Overrides

Source = Literal["override", "catalog", "fallback"]
Units = dict[str, int | Decimal]
AudioBilling = Literal["none", "seconds", "tokens", "seconds_as_tokens"]

CATALOG_VERSION = f"genai-prices {genai_prices.__version__}"
# OpenAI prices gpt-4o-transcribe at 6 USD per 1M audio tokens and estimates it at 0.006 USD per
# minute: 1,000 audio tokens a minute. Used only when a token-priced model reports seconds alone.
AUDIO_TOKENS_PER_MINUTE = 1000
MAX_MODEL_NAME = 200
# Bounds of one call's usage: far above any real call, far below what a 64-bit column holds
MAX_TOKENS = 10**12
MAX_AUDIO_SECONDS = 10**7
_DATE_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")
_PROBE = 1_000_000


def audio_seconds(value: object, field: str = "audio_seconds") -> Decimal:
    """A duration in seconds as `Decimal`; floats, booleans, NaN and negatives are refused."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise InvalidInput(f"{field} must be a decimal number or int, got {value!r}", field=field)
    seconds = Decimal(value)
    if not seconds.is_finite() or not 0 <= seconds <= MAX_AUDIO_SECONDS:
        raise InvalidInput(f"{field} must be finite, 0-{MAX_AUDIO_SECONDS} seconds, got {value}", field=field)
    return seconds


@dataclass(frozen=True, slots=True)
class Usage:
    """What one call consumed, as the provider reports it (OpenAI's conventions, see module doc)."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    input_audio_tokens: int = 0
    audio_seconds: Decimal | int = Decimal(0)  # stored as Decimal

    @property
    def seconds(self) -> Decimal:
        return Decimal(self.audio_seconds)  # always a Decimal already; this tells the type checker

    def __post_init__(self) -> None:
        for name in ("input_tokens", "cached_input_tokens", "output_tokens", "input_audio_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS:
                raise InvalidInput(f"{name} must be a whole number 0-{MAX_TOKENS}, got {value!r}", field=name)
        object.__setattr__(self, "audio_seconds", audio_seconds(self.audio_seconds))
        if self.cached_input_tokens > self.input_tokens:
            raise InvalidInput(
                f"cached_input_tokens ({self.cached_input_tokens}) cannot exceed input_tokens "
                f"({self.input_tokens}), which counts all input tokens",
                field="cached_input_tokens",
            )
        if self.cached_input_tokens + self.input_audio_tokens > self.input_tokens:
            raise InvalidInput(
                f"input_audio_tokens ({self.input_audio_tokens}) plus cached_input_tokens cannot exceed "
                f"input_tokens ({self.input_tokens}), which counts all input tokens",
                field="input_audio_tokens",
            )


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """A model name resolved to where its price comes from."""

    priced_as: str
    source: Source
    version: str
    catalog: tuple[Provider, ModelInfo] | None = None  # its prices may depend on the date
    price: ModelPrice | None = None  # custom or fallback price

    def model_price(self, at: datetime) -> ModelPrice:
        if self.price is not None:
            return self.price
        assert self.catalog is not None
        return self.catalog[1].get_prices(at)

    def exact_cost(self, units: Units, at: datetime) -> Decimal:
        """The catalog's own computation, provider-specific rules (minimum durations, …) included."""
        usage = genai_prices.Usage(**units)
        if self.catalog is None:
            return self.model_price(at).calc_price(usage)["total_price"]
        provider, info = self.catalog
        return info.calc_price(usage, provider, genai_request_timestamp=at).total_price


@dataclass(frozen=True, slots=True)
class Price:
    """The priced call: cost rounded up to the micro-USD, and where the price came from."""

    model: str
    priced_as: str
    source: Source
    version: str
    cost_micros: int
    audio_billing: AudioBilling

    @property
    def cost_usd(self) -> Decimal:
        return to_decimal(self.cost_micros)


class PriceCatalog:
    """Prices calls. Thread-safe; one instance per process is enough."""

    def __init__(
        self,
        *,
        overrides: Overrides | None = None,
        fallback: ModelPrice | None,
        fallback_version: str = "fallback",
        default_provider: str = "openai",
    ) -> None:
        """`fallback=None` refuses unknown models with `UnknownModel` instead of pricing them."""
        self._overrides = overrides or Overrides()
        self._fallback = fallback
        self._fallback_version = fallback_version
        self._default_provider = default_provider
        self._snapshot = data_snapshot.get_snapshot()
        self.resolve = lru_cache(maxsize=4096)(self._resolve)
        # ModelPrice is unhashable; the catalog's price objects live as long as the process, so their
        # identity is a sound key. The entry keeps the object alive so its id is never reused.
        self._coefficient_cache: dict[tuple[int, str | None], tuple[ModelPrice, _Coefficients | None]] = {}
        for alias, target in self._overrides.aliases.items():
            if self._find(target) is None and self._find_normalized(target) is None:
                raise ConfigError(
                    f"price overrides: aliases.{alias} points to {target!r}, which the catalog lacks"
                )

    @classmethod
    def from_settings(cls, settings: Settings) -> PriceCatalog:
        fallback = None
        if settings.unknown_model == "fallback":
            fallback = ModelPrice(
                input_mtok=settings.fallback_input_usd_per_mtok,
                output_mtok=settings.fallback_output_usd_per_mtok,
                audio_hours=settings.fallback_audio_usd_per_minute * 60,
            )
        return cls(
            overrides=Overrides.load(settings.price_overrides),
            fallback=fallback,
            fallback_version=(
                f"fallback in={settings.fallback_input_usd_per_mtok}"
                f" out={settings.fallback_output_usd_per_mtok}"
                f" audio_min={settings.fallback_audio_usd_per_minute}"
            ),
            default_provider=settings.default_provider,
        )

    def price(self, model: str, usage: Usage, *, at: datetime | None = None) -> Price:
        """The cost of one call of `model` that consumed `usage`, at time `at` (default now)."""
        if not isinstance(model, str):  # checked before the resolution cache, which would hash it
            raise InvalidInput(f"model must be a string, got {type(model).__name__}", field="model")
        at = at or datetime.now(UTC)
        resolved = self.resolve(model)
        model_price = resolved.model_price(at)
        billing = _audio_billing(model_price, usage)
        units = _library_units(usage, billing)
        coefficients = self._coefficients(resolved, model_price, at)
        cost = resolved.exact_cost(units, at) if coefficients is None else coefficients.apply(units)
        return Price(
            model, resolved.priced_as, resolved.source, resolved.version, cost_to_micros(cost), billing
        )

    def _coefficients(self, resolved: ResolvedModel, price: ModelPrice, at: datetime) -> _Coefficients | None:
        key = (id(price), resolved.catalog[0].id if resolved.catalog else None)
        cached = self._coefficient_cache.get(key)
        if cached is None:
            coefficients = _Coefficients.probe(lambda units: resolved.exact_cost(units, at), price)
            cached = self._coefficient_cache[key] = (price, coefficients)
        return cached[1]

    def _resolve(self, model: str) -> ResolvedModel:
        if not model.strip() or len(model) > MAX_MODEL_NAME or not model.isprintable():
            raise InvalidInput(f"model must be 1-{MAX_MODEL_NAME} printable characters", field="model")
        name = model.strip().lower()
        if name in self._overrides.prices:
            return ResolvedModel(
                name, "override", self._overrides.version, price=self._overrides.prices[name]
            )
        if name in self._overrides.aliases:
            target = self._overrides.aliases[name]
            found = self._find(target) or self._find_normalized(target)
            assert found is not None, "aliases are checked when the catalog is built"
            version = f"{self._overrides.version} + {CATALOG_VERSION}"
            return ResolvedModel(found[1].id, "override", version, catalog=found)
        found = self._find(name) or self._find_normalized(name)
        if found is not None:
            return ResolvedModel(found[1].id, "catalog", CATALOG_VERSION, catalog=found)
        if self._fallback is None:
            raise UnknownModel(f"no price is known for model {model!r}", field="model")
        return ResolvedModel("fallback", "fallback", self._fallback_version, price=self._fallback)

    def _find(self, name: str, provider_id: str | None = None) -> tuple[Provider, ModelInfo] | None:
        for provider in dict.fromkeys((provider_id, None, self._default_provider)):
            try:
                found: tuple[Provider, ModelInfo] = self._snapshot.find_provider_model(
                    name, None, provider, None
                )
            except LookupError:
                continue
            return found
        return None

    def _find_normalized(self, name: str) -> tuple[Provider, ModelInfo] | None:
        """Without a provider prefix first (a dated id keeps its own price), then without the date."""
        prefix, _, rest = name.rpartition("/")
        provider = (
            prefix if prefix and data_snapshot.find_provider_by_id(self._snapshot.providers, prefix) else None
        )
        undated = _DATE_SUFFIX.sub("", rest)
        candidates = [candidate for candidate in dict.fromkeys((rest, undated)) if candidate != name]
        for candidate in candidates:
            found = self._find(candidate, provider)
            if found is not None:
                return found
        return None


def _audio_billing(price: ModelPrice, usage: Usage) -> AudioBilling:
    if not usage.input_audio_tokens and not usage.audio_seconds:
        return "none"
    per_token = price.input_audio_mtok is not None
    per_duration = price.audio_hours is not None or price.input_audio_hours is not None
    if per_token and (usage.input_audio_tokens or not per_duration):
        return "seconds_as_tokens" if not usage.input_audio_tokens and usage.audio_seconds else "tokens"
    if per_duration:
        return "seconds"
    return "none"


def _library_units(usage: Usage, billing: AudioBilling) -> Units:
    """The usage in genai-prices' terms; every key given explicitly so nothing is inferred."""
    input_tokens, audio_tokens, seconds = usage.input_tokens, usage.input_audio_tokens, Decimal(0)
    if billing == "seconds":  # the audio is paid by the minute: its tokens are not input text
        input_tokens, audio_tokens, seconds = input_tokens - audio_tokens, 0, usage.seconds
    elif billing == "seconds_as_tokens":
        audio_tokens = math.ceil(usage.seconds * AUDIO_TOKENS_PER_MINUTE / 60)
        input_tokens += audio_tokens
    return {
        "input_tokens": input_tokens,
        "cache_read_tokens": usage.cached_input_tokens,
        "input_audio_tokens": audio_tokens,
        "cache_audio_read_tokens": 0,  # cached audio is not reported apart; it counts as cached input
        "output_tokens": usage.output_tokens,
        "audio_seconds": seconds,
    }


@dataclass(frozen=True, slots=True)
class _Coefficients:
    """A linear price: a per-call constant plus, per usage key, USD per `per` units.

    Kept per block of `per` units and divided last, exactly as genai-prices computes, so the result
    is the catalog's to the last digit.
    """

    per_call: Decimal
    per_unit: tuple[tuple[str, Decimal, int], ...]

    @classmethod
    def probe(cls, exact: Callable[[Units], Decimal], price: ModelPrice) -> _Coefficients | None:
        """Ask the catalog once per usage key; None when the price is not linear in the usage."""
        if any(isinstance(value, TieredPrices) for value in vars(price).values()):
            return None

        def cost(**units: int | Decimal) -> Decimal:
            return exact(_ZERO_UNITS | units)

        base = cost()
        with_input = cost(input_tokens=_PROBE)
        per_unit = (
            ("input_tokens", with_input - base, _PROBE),
            # cached and audio tokens are part of input_tokens: their coefficient is the difference
            ("cache_read_tokens", cost(input_tokens=_PROBE, cache_read_tokens=_PROBE) - with_input, _PROBE),
            ("input_audio_tokens", cost(input_tokens=_PROBE, input_audio_tokens=_PROBE) - with_input, _PROBE),
            ("output_tokens", cost(output_tokens=_PROBE) - base, _PROBE),
            ("audio_seconds", cost(audio_seconds=3600) - base, 3600),
        )
        coefficients = cls(base, tuple(entry for entry in per_unit if entry[1]))
        # A provider rule (a minimum billed duration, say) makes the price non-linear; the samples
        # catch it and such models are priced by the catalog on every call.
        if any(coefficients.apply(sample) != exact(sample) for sample in _SAMPLES):
            return None
        return coefficients

    def apply(self, units: Units) -> Decimal:
        total = self.per_call
        for key, price, per in self.per_unit:
            total += price * units[key] / per
        return total


_ZERO_UNITS: Units = {
    "input_tokens": 0,
    "cache_read_tokens": 0,
    "input_audio_tokens": 0,
    "cache_audio_read_tokens": 0,
    "output_tokens": 0,
    "audio_seconds": 0,
}
_SAMPLE_UNITS: tuple[Units, ...] = (
    {"input_tokens": 1, "output_tokens": 1},
    {"input_tokens": 1837, "cache_read_tokens": 1024, "input_audio_tokens": 512, "output_tokens": 93},
    {"audio_seconds": Decimal("1.7")},
    {"audio_seconds": Decimal("7"), "input_tokens": 20, "output_tokens": 40},
    {"audio_seconds": Decimal("4000.25")},
)
_SAMPLES: tuple[Units, ...] = tuple(_ZERO_UNITS | sample for sample in _SAMPLE_UNITS)
