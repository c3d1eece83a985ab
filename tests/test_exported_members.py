"""The library surface is explicit: `__all__` is exactly what the package exports."""

import aibudget


def test_all_exports_exist_and_nothing_public_is_missing_from_all() -> None:
    public = {name for name in dir(aibudget) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(aibudget, name)).__name__ == "module"}
    assert set(aibudget.__all__) == public - modules


def test_the_stable_names_of_the_specification_exist() -> None:
    budget = aibudget.Budget
    for method in (
        "open",
        "put_practice",
        "put_plan",
        "put_subscription",
        "authorize",
        "settle",
        "void",
        "grant_credit",
        "snapshot",
    ):
        assert callable(getattr(budget, method))
