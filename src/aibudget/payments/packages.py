"""Credit packages and what they cost a practice: the currency of its locale, amounts in minor units.

A practice pays in the currency of its locale's territory (`de-CH` → CHF, `fr-FR` → EUR, `en-US` →
USD; a locale without a territory pays in USD). A package is sold only in the currencies it has a
price in; a price is turned into the currency's smallest unit (rappen, cents, yen) as Stripe wants,
and a price finer than that unit is refused rather than rounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from babel import Locale
from babel.numbers import get_currency_precision, get_territory_currencies

from aibudget.config import CreditPackage
from aibudget.errors import ConfigError, Conflict, NotFound
from aibudget.money import MICROS_PER_USD

FALLBACK_CURRENCY = "usd"


@dataclass(frozen=True, slots=True)
class Offer:
    """One package as a practice buys it."""

    package_id: str
    credit_micros: int
    currency: str  # ISO 4217, lower case as Stripe writes it
    amount: int  # in the currency's smallest unit
    price: Decimal  # the same, in its major unit


def currency_of(locale: str) -> str:
    """The currency a practice with `locale` pays in."""
    territory = Locale.parse(locale, sep="-").territory
    currencies = get_territory_currencies(territory) if territory else []
    return currencies[0].lower() if currencies else FALLBACK_CURRENCY


def minor_units(price: Decimal, currency: str) -> int:
    """`price` in the smallest unit of `currency`; a price finer than that unit is a setting error."""
    scaled = price.scaleb(get_currency_precision(currency.upper()))
    if scaled != scaled.to_integral_value():
        raise ConfigError(
            f"AIBUDGET_CREDIT_PACKAGES: {price} {currency.upper()} is finer than its smallest unit"
        )
    return int(scaled)


def _major(amount: int, currency: str) -> Decimal:
    """`amount` minor units in the major unit, with the currency's own places (`24.50`, `1000`)."""
    return Decimal(amount).scaleb(-get_currency_precision(currency.upper()))


def _offer(package: CreditPackage, currency: str) -> Offer:
    amount = minor_units(package.prices[currency], currency)
    credit = int(package.credit_usd * MICROS_PER_USD)
    return Offer(package.package_id, credit, currency, amount, _major(amount, currency))


def offer(packages: Sequence[CreditPackage], package_id: str, *, locale: str) -> Offer:
    """Package `package_id` priced for a practice with `locale`."""
    for package in packages:
        if package.package_id == package_id:
            currency = currency_of(locale)
            if currency not in package.prices:
                raise Conflict(
                    f"package {package_id!r} has no price in {currency.upper()}, the currency of "
                    f"locale {locale}; it is sold in {', '.join(sorted(c.upper() for c in package.prices))}",
                    field="package_id",
                )
            return _offer(package, currency)
    known = ", ".join(package.package_id for package in packages) or "none configured"
    raise NotFound(f"package_id: no package {package_id!r} (packages: {known})", field="package_id")


def offers(packages: Sequence[CreditPackage], *, locale: str) -> list[Offer]:
    """Every package sold in the currency of `locale`."""
    currency = currency_of(locale)
    return [_offer(package, currency) for package in packages if currency in package.prices]


def topup_offer(packages: Sequence[CreditPackage], credit_micros: int, *, locale: str) -> Offer:
    """What an automatic top-up of `credit_micros` charges: the package of that credit priced in the
    practice's currency, else — when no package is configured for it — the credit's face value in USD."""
    currency = currency_of(locale)
    for package in packages:
        if int(package.credit_usd * MICROS_PER_USD) == credit_micros and currency in package.prices:
            return _offer(package, currency)
    amount = minor_units(Decimal(credit_micros) / MICROS_PER_USD, FALLBACK_CURRENCY)
    return Offer("", credit_micros, FALLBACK_CURRENCY, amount, _major(amount, FALLBACK_CURRENCY))
