"""`Budget`, the library's front door: opens the store, wires the services, one transaction per call.

```python
from aibudget import Budget
b = Budget.open("sqlite:///var/aibudget.sqlite3")        # migrates the schema first
b.put_practice("p1", name="Praxis Muster", policy="strict")
b.put_plan("basic", included_usd="20")
b.put_subscription("sub_1", practice_id="p1", plan="basic", status="active",
                   current_period_start=1764547200, current_period_end=1767225600)
b.bind_device("laptop-7f3a", practice_id="p1")
b.price("gpt-4o-mini", input_tokens=1200, output_tokens=600).cost_usd
```
"""

from aibudget.budget.operations import Operations

__all__ = ["Budget"]


class Budget(Operations):
    """AI budgets of many practices over one database. Thread-safe; share one per process.

    Built in layers, each in its own module and each using those below it: `core` (the database,
    one transaction per call), `accounts`, `payments`, `gating` (the ledger's calls) and
    `operations` (what the operator reads and manages)."""
