"""Fuzzing price resolution (SPEC §3): any model name and any usage is priced exactly, or refused.

`Budget.price` and `PriceCatalog.price` get arbitrary model strings (catalog ids, ids with a provider
prefix or a date, unicode, control characters, overlong names) and usage from 0 to 10^9 tokens with
`Decimal` audio seconds. A price is an `int` of micro-USD ≥ 0, never a float anywhere in the result;
more usage never costs less; an unknown model is priced at the fallback or refused with
`UnknownModel`, as configured; anything malformed is an `InvalidInput` naming its field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from genai_prices import data_snapshot
from hypothesis import given, settings
from hypothesis import strategies as st

from aibudget import Budget, Settings
from aibudget.errors import InvalidInput, UnknownModel
from aibudget.pricing.catalog import MAX_AUDIO_SECONDS, MAX_MODEL_NAME, MAX_TOKENS, Price, PriceCatalog, Usage

CATALOG_IDS = sorted(
    {model.id for provider in data_snapshot.get_snapshot().providers for model in provider.models}
)
USAGE_FIELDS = ("input_tokens", "cached_input_tokens", "output_tokens", "input_audio_tokens", "audio_seconds")

bounded = settings(max_examples=500, deadline=None)


@pytest.fixture(scope="module")
def fallback() -> PriceCatalog:
    return PriceCatalog.from_settings(Settings.load(unknown_model="fallback", price_overrides=None))


@pytest.fixture(scope="module")
def refusing() -> PriceCatalog:
    return PriceCatalog.from_settings(Settings.load(unknown_model="refuse", price_overrides=None))


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Budget]:
    data_dir: Path = tmp_path_factory.mktemp("pricing") / "var"
    settings_ = Settings.load(data_dir=data_dir, unknown_model="fallback", price_overrides=None)
    with Budget.open(f"sqlite:///{data_dir / 'aibudget.sqlite3'}", settings=settings_) as opened:
        yield opened


known_models = st.sampled_from(CATALOG_IDS)
model_names = st.one_of(
    known_models,
    known_models.map(lambda name: f"openai/{name}"),
    known_models.map(lambda name: f"{name}-2031-02-28"),
    known_models.map(str.upper),
    st.text(max_size=MAX_MODEL_NAME + 20),
    st.text(st.characters(codec="ascii"), min_size=1, max_size=40),
    st.sampled_from(["", " ", "\t", "gpt-4o-mini\n", "gpt\x00", "x" * (MAX_MODEL_NAME + 1), "a/b/c"]),
)
tokens = st.integers(0, 10**9)
seconds = st.decimals(0, 10**6, places=3, allow_nan=False, allow_infinity=False)


@st.composite
def usages(draw: st.DrawFn) -> dict[str, Any]:
    """A valid usage: cached and audio tokens are part of the input tokens."""
    input_tokens = draw(tokens)
    cached = draw(st.integers(0, input_tokens))
    audio = draw(st.integers(0, input_tokens - cached))
    return {
        "input_tokens": input_tokens,
        "cached_input_tokens": cached,
        "input_audio_tokens": audio,
        "output_tokens": draw(tokens),
        "audio_seconds": draw(seconds | st.integers(0, 10**6)),
    }


def assert_no_float(price: Price) -> None:
    for field in dataclasses.fields(price):
        assert not isinstance(getattr(price, field.name), float), field.name
    assert type(price.cost_micros) is int
    assert price.cost_micros >= 0
    assert isinstance(price.cost_usd, Decimal)
    assert price.cost_usd * 1_000_000 == price.cost_micros


def outcome(price: Callable[[], Price]) -> Price | InvalidInput:
    """The price, or the `InvalidInput` that refused it."""
    try:
        return price()
    except InvalidInput as refused:
        return refused


def priced_or_refused(catalog: PriceCatalog, model: str, usage: Usage) -> Price | None:
    """The price, or None when the usage costs more than any single call may (an `InvalidInput`)."""
    priced = outcome(lambda: catalog.price(model, usage))
    if isinstance(priced, InvalidInput):
        assert priced.field == "usage", priced.detail
        return None
    return priced


@bounded
@given(model=model_names, usage=usages())
def test_any_model_is_priced_in_whole_micro_usd_or_refused_by_name(
    fallback: PriceCatalog, model: str, usage: dict[str, Any]
) -> None:
    price = outcome(lambda: fallback.price(model, Usage(**usage)))
    if isinstance(price, InvalidInput):
        assert type(price) is InvalidInput  # never UnknownModel: the policy is `fallback`
        assert price.field in {"model", "usage"}, price.detail
        if price.field == "model":
            assert not model.strip() or len(model) > MAX_MODEL_NAME or not model.isprintable()
        return
    assert_no_float(price)
    assert price.model == model
    assert price.source in {"catalog", "fallback"}
    assert (price.source == "fallback") == (price.priced_as == "fallback")


@bounded
@given(model=model_names, usage=usages())
def test_an_unknown_model_is_refused_exactly_when_the_fallback_would_price_it(
    fallback: PriceCatalog, refusing: PriceCatalog, model: str, usage: dict[str, Any]
) -> None:
    try:
        expected = fallback.price(model, Usage(**usage))
    except InvalidInput:
        return
    if expected.source == "fallback":
        with pytest.raises(UnknownModel) as refused:
            refusing.price(model, Usage(**usage))
        assert refused.value.field == "model"
    else:
        assert refusing.price(model, Usage(**usage)).cost_micros == expected.cost_micros


@bounded
@given(
    model=known_models | st.text(min_size=1, max_size=30).filter(str.isprintable),
    usage=usages(),
    dimension=st.sampled_from(["input", "cached", "audio_tokens", "output", "seconds"]),
    more=st.integers(1, 10**8),
)
def test_more_usage_never_costs_less(
    fallback: PriceCatalog, model: str, usage: dict[str, Any], dimension: str, more: int
) -> None:
    larger = dict(usage)
    if dimension == "input":
        larger["input_tokens"] += more
    elif dimension == "cached":  # more input tokens, all of them read from cache
        larger["input_tokens"] += more
        larger["cached_input_tokens"] += more
    elif dimension == "audio_tokens":  # more input tokens, all of them audio
        larger["input_tokens"] += more
        larger["input_audio_tokens"] += more
        # reported audio tokens replace the seconds of a token-priced model (SPEC §3): compare like
        # with like, so the smaller call must report tokens too when the larger one does
        if not usage["input_audio_tokens"]:
            return
    elif dimension == "output":
        larger["output_tokens"] += more
    else:
        larger["audio_seconds"] += Decimal(more) / 1000
    if not model.strip():
        return
    small = priced_or_refused(fallback, model, Usage(**usage))
    large = priced_or_refused(fallback, model, Usage(**larger))
    if small is not None and large is not None:
        assert large.cost_micros >= small.cost_micros, (usage, larger, small, large)
    if large is not None:
        assert small is not None, "a smaller call than one that was priced was refused"


@bounded
@given(model=known_models, usage=usages())
def test_budget_price_is_the_catalog_price(
    library: Budget, fallback: PriceCatalog, model: str, usage: dict[str, Any]
) -> None:
    price = outcome(lambda: library.price(model, **usage))
    if isinstance(price, InvalidInput):
        assert price.field == "usage", price.detail
        return
    assert_no_float(price)
    assert price.cost_micros == fallback.price(model, Usage(**usage)).cost_micros


bad_counts = st.one_of(
    st.integers(max_value=-1),
    st.integers(min_value=MAX_TOKENS + 1),
    st.floats(),
    st.booleans(),
    st.text(max_size=5),
    st.decimals(allow_nan=True),
    st.none(),
)
bad_seconds = st.one_of(
    st.decimals(max_value=Decimal("-0.001"), allow_nan=False),
    st.decimals(min_value=MAX_AUDIO_SECONDS + 1, allow_nan=False),
    st.sampled_from([Decimal("NaN"), Decimal("sNaN"), Decimal("Infinity"), Decimal("-Infinity")]),
    st.integers(max_value=-1),
    st.floats(),
    st.booleans(),
    st.text(max_size=5),
    st.none(),
)


@bounded
@given(
    model=known_models,
    usage=usages(),
    field=st.sampled_from(USAGE_FIELDS),
    data=st.data(),
)
def test_a_malformed_usage_value_is_refused_naming_its_field(
    library: Budget, model: str, usage: dict[str, Any], field: str, data: st.DataObject
) -> None:
    bad = data.draw(bad_seconds if field == "audio_seconds" else bad_counts, label=field)
    with pytest.raises(InvalidInput) as refused:
        library.price(model, **{**usage, field: bad})
    assert refused.value.field == field, refused.value.detail


@bounded
@given(model=known_models, usage=usages(), excess=st.integers(1, 10**6))
def test_cached_or_audio_tokens_beyond_the_input_are_refused(
    library: Budget, model: str, usage: dict[str, Any], excess: int
) -> None:
    too_many_cached = {
        **usage,
        "cached_input_tokens": usage["input_tokens"] + excess,
        "input_audio_tokens": 0,
    }
    with pytest.raises(InvalidInput) as refused:
        library.price(model, **too_many_cached)
    assert refused.value.field == "cached_input_tokens"

    spare = usage["input_tokens"] - usage["cached_input_tokens"]
    too_many_audio = {**usage, "input_audio_tokens": spare + excess}
    with pytest.raises(InvalidInput) as refused:
        library.price(model, **too_many_audio)
    assert refused.value.field == "input_audio_tokens"


@bounded
@given(
    model=st.one_of(
        st.none(),
        st.integers(),
        st.floats(),
        st.binary(max_size=10),
        st.tuples(st.text(max_size=3)),
        st.text(max_size=MAX_MODEL_NAME).filter(lambda name: not name.strip() or not name.isprintable()),
        st.text(min_size=MAX_MODEL_NAME + 1, max_size=MAX_MODEL_NAME + 50),
    )
)
def test_a_malformed_model_is_refused_naming_the_model(library: Budget, model: object) -> None:
    with pytest.raises(InvalidInput) as refused:
        library.price(model, input_tokens=1)  # type: ignore[arg-type]
    assert refused.value.field == "model"


@pytest.mark.parametrize("model", [["gpt-4o-mini"], {"model": "gpt-4o-mini"}], ids=["list", "dict"])
def test_an_unhashable_model_is_refused_naming_the_model(library: Budget, model: object) -> None:
    with pytest.raises(InvalidInput) as refused:
        library.price(model, input_tokens=1)  # type: ignore[arg-type]
    assert refused.value.field == "model"
