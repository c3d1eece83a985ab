"""Money is exact: integer micro-USD inside, decimal strings outside, costs rounded up."""

from decimal import Decimal

import pytest

from aibudget.errors import InvalidInput
from aibudget.money import FloatNotAllowed, cost_to_micros, format_usd, parse_usd, to_decimal


@pytest.mark.parametrize(
    ("value", "micros"),
    [
        ("20", 20_000_000),
        ("0.000001", 1),
        (Decimal("12.50"), 12_500_000),
        (7, 7_000_000),
        (" 3.5 ", 3_500_000),
    ],
)
def test_exact_amounts_become_micro_usd(value: object, micros: int) -> None:
    assert parse_usd(value, field="amount_usd") == micros


def test_floats_are_refused_by_name() -> None:
    with pytest.raises(FloatNotAllowed, match="amount_usd"):
        parse_usd(0.1, field="amount_usd")


@pytest.mark.parametrize("value", ["20 USD", "nan", "inf", "-inf", "", "1e", True, None, [1]])
def test_non_amounts_are_refused_naming_the_field(value: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_usd(value, field="included_usd")
    assert caught.value.field == "included_usd"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("1e3", id="exponent"),
        pytest.param("1E+2", id="exponent with a sign"),
        pytest.param("1_000", id="underscores"),
        pytest.param("\uff11\uff10\uff10", id="full-width digits"),
        pytest.param("\u0661\u0660\u0660", id="Arabic-Indic digits"),
        pytest.param("\u0663.\u0665", id="Arabic-Indic digits with a point"),
        pytest.param("+5", id="plus sign"),
        pytest.param(".5", id="no digit before the point"),
        pytest.param("5.", id="no digit after the point"),
        pytest.param("5\u00a0", id="non-breaking space"),
        pytest.param("\u20035", id="em space"),
    ],
)
def test_typed_amounts_are_ascii_digits_and_one_point(text: str) -> None:
    """`Decimal` reads all of these as numbers; no one types them meaning an amount of money."""
    with pytest.raises(InvalidInput, match=r"is not an amount in USD like 25\.00") as caught:
        parse_usd(text, field="amount_usd")
    assert caught.value.field == "amount_usd"


def test_typed_negative_amounts_need_permission_and_a_plain_minus() -> None:
    with pytest.raises(InvalidInput, match="negative"):
        parse_usd("-0", field="amount_usd")
    with pytest.raises(InvalidInput, match="not an amount"):
        parse_usd("-1e3", field="amount_usd", allow_negative=True)
    assert parse_usd("-0.50", field="amount_usd", allow_negative=True) == -500_000


def test_a_decimal_in_exponent_form_is_taken_but_the_same_typed_text_is_not() -> None:
    assert parse_usd(Decimal("1E+3"), field="amount_usd") == 1_000_000_000
    with pytest.raises(InvalidInput, match="amount_usd"):
        parse_usd("1E+3", field="amount_usd")


@pytest.mark.parametrize("value", [10**5000, "9" * 5000], ids=["an int too long to print", "a long text"])
def test_an_amount_too_long_to_show_is_refused_with_a_short_message(value: object) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_usd(value, field="amount_usd")
    assert refused.value.field == "amount_usd"
    assert "more than 1,000,000,000 USD" in str(refused.value)
    assert len(str(refused.value)) < 120


def test_more_than_six_places_is_refused_not_rounded() -> None:
    with pytest.raises(InvalidInput, match="6 decimal places"):
        parse_usd("0.0000001", field="amount_usd")


def test_negative_amounts_need_permission() -> None:
    with pytest.raises(InvalidInput, match="negative"):
        parse_usd("-1", field="amount_usd")
    assert parse_usd("-1", field="amount_usd", allow_negative=True) == -1_000_000


@pytest.mark.parametrize(
    ("cost", "micros"),
    [
        (Decimal("0.0000000001"), 1),  # a non-zero call never costs 0
        (Decimal("0.000001"), 1),
        (Decimal("0.0000010001"), 2),
        (Decimal("0.75"), 750_000),
        (Decimal(0), 0),
    ],
)
def test_costs_round_up_to_the_next_micro_usd(cost: Decimal, micros: int) -> None:
    assert cost_to_micros(cost) == micros


def test_json_form_has_six_places() -> None:
    assert format_usd(2400) == "0.002400"
    assert format_usd(20_000_000) == "20.000000"
    assert to_decimal(1) == Decimal("0.000001")
