"""What a call costs: PriceCatalog told as specifications, checked against genai-prices itself (no mocks).

The last tests compare the catalog's cached fast path with `genai_prices.calc_price` across the
catalog: that comparison, not a docstring, is what shows the fast path is exact.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import genai_prices
import pytest
from genai_prices import data_snapshot
from genai_prices.types import ModelInfo, ModelPrice, Provider, TieredPrices
from hypothesis import example, given, settings
from hypothesis import strategies as st

from aibudget.config import Settings
from aibudget.errors import ConfigError, InvalidInput, UnknownModel
from aibudget.money import cost_to_micros
from aibudget.pricing.catalog import PriceCatalog, Usage, _audio_billing, _library_units

CATALOG = "genai-prices 0.2.3"
M = 1_000_000
NOW = datetime.now(UTC)
MakeCatalog = Callable[..., PriceCatalog]
WithOverrides = Callable[[str], PriceCatalog]


@pytest.fixture
def make_catalog() -> MakeCatalog:
    """A catalog built the way the application builds it: from validated settings."""
    return lambda **overrides: PriceCatalog.from_settings(Settings.load(**overrides))


@pytest.fixture
def catalog(make_catalog: MakeCatalog) -> PriceCatalog:
    return make_catalog()


@pytest.fixture
def with_overrides(tmp_path: Path, make_catalog: MakeCatalog) -> WithOverrides:
    def build(toml: str) -> PriceCatalog:
        path = tmp_path / "prices.toml"
        path.write_text(toml)
        return make_catalog(price_overrides=path)

    return build


def test_gpt_4o_mini_costs_its_list_price(catalog: PriceCatalog) -> None:
    priced = catalog.price("gpt-4o-mini", Usage(input_tokens=M, output_tokens=M))
    assert priced.cost_usd == Decimal("0.750000")  # 0.15 in + 0.60 out per 1M
    assert (priced.model, priced.priced_as, priced.source) == ("gpt-4o-mini", "gpt-4o-mini", "catalog")
    assert priced.version == CATALOG
    assert priced.audio_billing == "none"


@pytest.mark.parametrize(
    "name", ["gpt-4o-mini-2024-07-18", "openai/gpt-4o-mini", "gpt-4o-mini-2099-01-01", "GPT-4o-Mini"]
)
def test_dated_prefixed_and_capitalised_names_price_as_the_model(catalog: PriceCatalog, name: str) -> None:
    priced = catalog.price(name, Usage(input_tokens=M, output_tokens=M))
    assert (priced.model, priced.priced_as, priced.cost_usd) == (name, "gpt-4o-mini", Decimal("0.750000"))


def test_a_provider_prefix_keeps_a_dated_model_its_own_price(catalog: PriceCatalog) -> None:
    # The catalog prices gpt-4o-2024-05-13 at 5 USD per 1M input, gpt-4o at 2.50: stripping the
    # prefix must not also strip the date of a model the catalog knows by its date.
    plain = catalog.price("gpt-4o-2024-05-13", Usage(input_tokens=M))
    prefixed = catalog.price("openai/gpt-4o-2024-05-13", Usage(input_tokens=M))
    assert plain.cost_usd == Decimal("5.000000")
    assert (prefixed.priced_as, prefixed.cost_usd) == ("gpt-4o-2024-05-13", Decimal("5.000000"))


def test_whisper_is_charged_by_the_minute(catalog: PriceCatalog) -> None:
    priced = catalog.price("whisper-1", Usage(audio_seconds=Decimal(60)))
    assert (priced.cost_usd, priced.audio_billing) == (Decimal("0.006000"), "seconds")


def test_a_per_minute_model_does_not_also_charge_its_audio_tokens_as_input(catalog: PriceCatalog) -> None:
    # voxtral-small: 0.10 USD per 1M input tokens and 0.24 USD per audio hour.
    audio_only = Usage(input_tokens=M, input_audio_tokens=M, audio_seconds=Decimal(60))
    with_text = Usage(input_tokens=M + 500_000, input_audio_tokens=M, audio_seconds=Decimal(60))
    assert catalog.price("voxtral-small-24b-2507", audio_only).cost_usd == Decimal("0.004000")
    assert catalog.price("voxtral-small-24b-2507", with_text).cost_usd == Decimal("0.054000")


def test_gpt_4o_transcribe_is_charged_by_audio_tokens_never_also_by_seconds(catalog: PriceCatalog) -> None:
    # 6 USD per 1M audio tokens, 10 USD per 1M output tokens.
    tokens = Usage(input_tokens=1000, input_audio_tokens=1000, output_tokens=100)
    both = Usage(input_tokens=1000, input_audio_tokens=1000, output_tokens=100, audio_seconds=Decimal(60))
    for usage in (tokens, both):
        priced = catalog.price("gpt-4o-transcribe", usage)
        assert (priced.cost_usd, priced.audio_billing) == (Decimal("0.007000"), "tokens")


@pytest.mark.parametrize(("seconds", "cost"), [("60", "0.006000"), ("90", "0.009000"), ("3600", "0.360000")])
def test_a_token_priced_model_given_only_seconds_converts_at_1000_tokens_a_minute(
    catalog: PriceCatalog, seconds: str, cost: str
) -> None:
    priced = catalog.price("gpt-4o-transcribe", Usage(audio_seconds=Decimal(seconds)))
    assert (priced.cost_usd, priced.audio_billing) == (Decimal(cost), "seconds_as_tokens")


@pytest.mark.parametrize(
    ("seconds", "cost"),
    [("1", "0.000102"), ("0.01", "0.000006")],  # 16.7 -> 17 tokens; 0.17 -> 1 token, never free
)
def test_seconds_converted_to_tokens_round_a_partial_token_up(
    catalog: PriceCatalog, seconds: str, cost: str
) -> None:
    assert catalog.price("gpt-4o-transcribe", Usage(audio_seconds=Decimal(seconds))).cost_usd == Decimal(cost)


@pytest.mark.parametrize(
    ("model", "usage", "micros"),
    [
        ("gpt-4o-mini", Usage(input_tokens=1), 1),  # 0.15 micro-USD
        ("gpt-5-nano", Usage(input_tokens=1), 1),  # 0.05 micro-USD
        ("gpt-4o-mini", Usage(input_tokens=7), 2),  # 1.05 micro-USD
        ("gpt-4o-mini", Usage(input_tokens=1, cached_input_tokens=1), 1),  # 0.075 micro-USD
        ("gpt-4o-mini", Usage(), 0),  # nothing used, nothing charged
    ],
)
def test_costs_round_up_so_a_used_call_is_never_free(
    catalog: PriceCatalog, model: str, usage: Usage, micros: int
) -> None:
    assert catalog.price(model, usage).cost_micros == micros


def test_an_unknown_model_is_priced_at_the_conservative_fallback(catalog: PriceCatalog) -> None:
    priced = catalog.price("praxis-llm-v9", Usage(input_tokens=M, output_tokens=M))
    assert priced.cost_usd == Decimal("20.000000")  # 5 + 15 USD per 1M
    assert (priced.source, priced.priced_as) == ("fallback", "fallback")
    assert priced.version == "fallback in=5 out=15 audio_min=0.02"


def test_fallback_rates_come_from_the_settings(make_catalog: MakeCatalog) -> None:
    catalog = make_catalog(
        fallback_input_usd_per_mtok="1",
        fallback_output_usd_per_mtok="2.5",
        fallback_audio_usd_per_minute="0.5",
    )
    assert catalog.price("mystery", Usage(input_tokens=M, output_tokens=M)).cost_usd == Decimal("3.500000")
    assert catalog.price("mystery", Usage(audio_seconds=Decimal(60))).cost_usd == Decimal("0.500000")


def test_the_refuse_policy_names_the_unknown_model(make_catalog: MakeCatalog) -> None:
    catalog = make_catalog(unknown_model="refuse")
    with pytest.raises(UnknownModel, match="praxis-llm-v9") as raised:
        catalog.price("praxis-llm-v9", Usage(input_tokens=1))
    assert raised.value.field == "model"
    assert catalog.price("gpt-4o-mini", Usage(input_tokens=M)).cost_usd == Decimal("0.150000")


def test_an_alias_prices_a_deployment_name_as_a_catalog_model(with_overrides: WithOverrides) -> None:
    catalog = with_overrides('[aliases]\n"Prod-Mini-Deployment" = "gpt-4o-mini"\n')
    priced = catalog.price("prod-mini-DEPLOYMENT", Usage(input_tokens=M, output_tokens=M))
    assert (priced.priced_as, priced.source, priced.cost_usd) == ("gpt-4o-mini", "override", Decimal("0.75"))
    assert priced.version.startswith("overrides sha256:")
    assert priced.version.endswith(f" + {CATALOG}")


def test_a_custom_price_charges_each_kind_of_token(with_overrides: WithOverrides) -> None:
    catalog = with_overrides(
        '[models."Praxis-LLM"]\ninput_mtok = "0.40"\ncache_read_mtok = "0.10"\noutput_mtok = 1.60\n'
    )
    usage = Usage(input_tokens=M, cached_input_tokens=500_000, output_tokens=M)
    priced = catalog.price("PRAXIS-llm", usage)
    assert priced.cost_usd == Decimal("1.850000")  # 0.5M x 0.40 + 0.5M x 0.10 + 1M x 1.60
    assert (priced.priced_as, priced.source) == ("praxis-llm", "override")
    assert priced.version.startswith("overrides sha256:")


def test_an_override_wins_over_the_catalog(with_overrides: WithOverrides) -> None:
    catalog = with_overrides('[models."gpt-4o-mini"]\ninput_mtok = "1"\n')
    assert catalog.price("gpt-4o-mini", Usage(input_tokens=M)).cost_usd == Decimal("1.000000")


@pytest.mark.parametrize(("seconds", "cost"), [(30, "0.005000"), (3, "0.000500")])
def test_a_custom_per_minute_price_is_charged_exactly(
    with_overrides: WithOverrides, make_catalog: MakeCatalog, seconds: int, cost: str
) -> None:
    custom = with_overrides('[models."dictate"]\naudio_minute = "0.01"\n')
    fallback = make_catalog(fallback_audio_usd_per_minute="0.01")
    assert custom.price("dictate", Usage(audio_seconds=Decimal(seconds))).cost_usd == Decimal(cost)
    assert fallback.price("mystery", Usage(audio_seconds=Decimal(seconds))).cost_usd == Decimal(cost)


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ('[models.x]\ninput_per_mtok = "1"\n', "models.x.input_per_mtok"),
        ("[models.x]\ninput_mtok = -1\n", "models.x.input_mtok = -1"),
        ('[models.x]\noutput_mtok = "abc"\n', "models.x.output_mtok = 'abc'"),
        ('[models.x]\noutput_mtok = "NaN"\n', "models.x.output_mtok = 'NaN'"),
        ("[models.x]\n", "models.x"),
        ("[aliases]\nfoo = 5\n", "aliases.foo = 5"),
        ('[aliases]\nfoo = "  "\n', "aliases.foo"),
        ('[price]\nfoo = "gpt-4o"\n', "price"),
        ('[aliases]\nfoo = "gpt-4o"\n[models.FOO]\ninput_mtok = "1"\n', "foo"),
        ("[aliases\n", "not valid TOML"),
    ],
)
def test_a_mistake_in_the_overrides_file_names_the_entry(
    with_overrides: WithOverrides, toml: str, named: str
) -> None:
    with pytest.raises(ConfigError, match=r"prices\.toml") as raised:
        with_overrides(toml)
    assert named in raised.value.detail


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"input_tokens": -1}, "input_tokens"),
        ({"output_tokens": -5}, "output_tokens"),
        ({"input_tokens": 1.0}, "input_tokens"),
        ({"input_tokens": True}, "input_tokens"),
        ({"input_tokens": 5, "cached_input_tokens": 6}, "cached_input_tokens"),
        ({"input_tokens": 5, "input_audio_tokens": 6}, "input_audio_tokens"),
        ({"input_tokens": 5, "cached_input_tokens": 3, "input_audio_tokens": 3}, "input_audio_tokens"),
        ({"audio_seconds": Decimal("NaN")}, "audio_seconds"),
        ({"audio_seconds": Decimal("sNaN")}, "audio_seconds"),
        ({"audio_seconds": Decimal("Infinity")}, "audio_seconds"),
        ({"audio_seconds": Decimal("-0.5")}, "audio_seconds"),
        ({"audio_seconds": 1.5}, "audio_seconds"),
        ({"audio_seconds": False}, "audio_seconds"),
    ],
)
def test_invalid_usage_names_the_field(fields: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        Usage(**fields)  # type: ignore[arg-type]
    assert raised.value.field == field


@pytest.mark.parametrize("name", ["", "   ", "m" * 201])
def test_an_empty_or_overlong_model_name_is_refused(catalog: PriceCatalog, name: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        catalog.price(name, Usage(input_tokens=1))
    assert raised.value.field == "model"


def test_a_model_name_is_resolved_once_then_served_from_the_cache(catalog: PriceCatalog) -> None:
    before = catalog.resolve.cache_info()
    catalog.price("gpt-4o-mini", Usage(input_tokens=10))
    catalog.price("gpt-4o-mini", Usage(input_tokens=20, output_tokens=5))
    after = catalog.resolve.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)


# The fast path against genai-prices itself --------------------------------------------------------


def _tier_starts(price: ModelPrice) -> set[int]:
    return {t.start for v in vars(price).values() if isinstance(v, TieredPrices) for t in v.tiers}


def _is_tiered(price: ModelPrice) -> bool:
    return any(isinstance(value, TieredPrices) for value in vars(price).values())


def _priced_keys(model: ModelInfo) -> set[str]:
    return {key for key, value in vars(model.get_prices(NOW)).items() if value is not None}


def _catalog_cases() -> dict[str, tuple[Provider, ModelInfo, str]]:
    """Every openai model, plus every 4th, every audio and every tiered model of the other providers:
    a name the catalog resolves to exactly that model (its id, `provider/id`, a name its match rule
    accepts), with the provider and a name genai-prices finds it by at that provider."""
    probe = PriceCatalog(fallback=None)
    cases: dict[str, tuple[Provider, ModelInfo, str]] = {}
    for provider in data_snapshot.get_snapshot().providers:
        for index, model in enumerate(provider.models):
            special = _priced_keys(model) & AUDIO_KEYS or _is_tiered(model.get_prices(NOW))
            if provider.id != "openai" and index % 4 and not special:
                continue
            matched = getattr(model.match, "equals", None) or getattr(model.match, "starts_with", "")
            matched += "" if matched == getattr(model.match, "equals", None) else "08-06:acme::ft1"
            ref = next((ref for ref in (model.id, matched) if provider.find_model(ref) is model), None)
            for name in dict.fromkeys((model.id, f"{provider.id}/{model.id}", matched)):
                try:
                    resolved = probe.resolve(name)
                except UnknownModel:
                    continue
                if resolved.catalog is not None and resolved.catalog[1] is model and ref is not None:
                    cases[name] = (provider, model, ref)
                    break
    return cases


AUDIO_KEYS = {"audio_hours", "input_audio_hours", "input_audio_mtok"}
CASES = _catalog_cases()
TIERED = sorted(name for name, (_, model, _) in CASES.items() if _is_tiered(model.get_prices(NOW)))
LINEAR = sorted(CASES.keys() - set(TIERED))
AUDIO = sorted(name for name, (_, model, _) in CASES.items() if _priced_keys(model) & AUDIO_KEYS)
PER_MINUTE = [name for name in AUDIO if "audio_hours" in _priced_keys(CASES[name][1])]
TIER_STARTS = sorted(set().union(*(_tier_starts(CASES[name][1].get_prices(NOW)) for name in TIERED)))
FAST_PATH = PriceCatalog(fallback=None)


def test_the_comparison_covers_the_catalog() -> None:
    openai = next(p for p in data_snapshot.get_snapshot().providers if p.id == "openai")
    assert {model.id for provider, model, _ in CASES.values() if provider is openai} == {
        model.id for model in openai.models
    }
    assert len({provider.id for provider, _, _ in CASES.values()}) >= 10
    assert "gpt-5.6-sol" in TIERED
    assert 272_000 in TIER_STARTS
    assert {"whisper-1", "gpt-4o-transcribe", "gpt-realtime-translate", "groq/whisper-large-v3"} <= set(AUDIO)
    assert len(PER_MINUTE) >= 10


def _library_micros(name: str, usage: Usage, at: datetime) -> tuple[int, dict[str, int | Decimal]]:
    """genai-prices' own price, at the model's provider, for the usage the catalog hands it."""
    provider, model, ref = CASES[name]
    units = _library_units(usage, _audio_billing(model.get_prices(at), usage))
    # The catalog's usage counts cached and audio input tokens apart (their sum is at most
    # input_tokens); genai-prices must be told that no cached token was audio, or it refuses a model
    # with a cached-audio price (gpt-realtime) when both are used.
    units.setdefault("cache_audio_read_tokens", 0)
    calc = genai_prices.calc_price(
        genai_prices.Usage(**units), ref, provider_id=provider.id, genai_request_timestamp=at
    )
    assert calc.model is model
    return cost_to_micros(calc.total_price), units


def _part_of(total: int) -> st.SearchStrategy[int]:
    return st.one_of(st.just(0), st.integers(0, min(total, 3000)), st.integers(0, total))


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, Usage, datetime]:
    name = draw(st.one_of(st.sampled_from(LINEAR), st.sampled_from(TIERED), st.sampled_from(AUDIO)))
    near_a_tier = st.sampled_from(TIER_STARTS).flatmap(lambda start: st.integers(start - 2, start + 2))
    input_tokens = draw(st.one_of(st.integers(0, 5000), st.integers(0, 3 * M), near_a_tier))
    cached = draw(_part_of(input_tokens))
    audio = draw(_part_of(input_tokens - cached))
    seconds = draw(
        st.one_of(
            st.just(Decimal(0)),
            st.integers(0, 720_000).map(lambda hundredths: Decimal(hundredths).scaleb(-2)),
            st.decimals(min_value=0, max_value=20_000, places=3),
        )
    )
    at = draw(st.sampled_from([NOW, datetime(2025, 3, 1, tzinfo=UTC)]))
    return name, Usage(input_tokens, cached, draw(st.integers(0, 2 * M)), audio, seconds), at


def test_the_fast_path_prices_exactly_like_genai_prices() -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=600, deadline=None)
    @given(call=calls())
    @example(call=("gpt-5.6-sol", Usage(272_001, 100_000, 1000), NOW))
    @example(call=("gpt-5.6-sol", Usage(272_000, 100_000, 1000), NOW))
    @example(call=("gpt-realtime", Usage(3000, 1000, 500, 1500), NOW))
    @example(call=("gpt-realtime-translate", Usage(audio_seconds=Decimal("1.65")), NOW))
    @example(call=("groq/whisper-large-v3", Usage(audio_seconds=Decimal(3)), NOW))
    def check(call: tuple[str, Usage, datetime]) -> None:
        name, usage, at = call
        expected, units = _library_micros(name, usage, at)
        assert FAST_PATH.price(name, usage, at=at).cost_micros == expected, units
        price = CASES[name][1].get_prices(at)
        if not _is_tiered(price):
            seen["coefficients"] += 1
        elif units["input_tokens"] > min(_tier_starts(price)):
            seen["tier crossed"] += 1
        else:
            seen["tier not crossed"] += 1
        seen["audio " + _audio_billing(price, usage)] += 1

    check()
    # Both paths ran (coefficients, and the catalog asked per call for tiered prices), on both sides
    # of a tier threshold, and through every way audio is billed: the comparison compared something.
    assert min(seen[path] for path in ("coefficients", "tier crossed", "tier not crossed")) >= 5, seen
    assert min(seen["audio " + way] for way in ("none", "seconds", "tokens", "seconds_as_tokens")) >= 5, seen


def test_per_minute_prices_are_exact_for_every_hundredth_of_a_second_up_to_ten() -> None:
    """A per-second coefficient that is not exact (2.04 USD / 3600 s) is off by a micro-USD for only
    some durations; sweeping them all finds it where random sampling might not."""
    wrong = []
    for name in PER_MINUTE:
        for hundredths in range(1, 1001):
            usage = Usage(audio_seconds=Decimal(hundredths).scaleb(-2))
            expected, _ = _library_micros(name, usage, NOW)
            got = FAST_PATH.price(name, usage, at=NOW).cost_micros
            if got != expected:
                wrong.append(f"{name} {usage.audio_seconds}s: {got} != genai-prices {expected}")
    assert not wrong, f"{len(wrong)} wrong, e.g. {wrong[:2]} ... {wrong[-2:]}"
