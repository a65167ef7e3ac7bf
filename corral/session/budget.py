"""Session budgets (spec §6.2): a cap on a session's list cost, checked before every model request.

A budget is `{"type": "limit", "max_list_cost": {"amount": "<US cents>", "currency": "USD"}}`. The cost is
the session's token usage at its model's configured list price (corral.pricing).
"""

from __future__ import annotations

from typing import Any

from corral.pricing import CURRENCY, ModelPrice, price_for

Json = dict[str, Any]


def budget_cents(budget: Json | None) -> int | None:
    if not budget:
        return None
    return int(budget["max_list_cost"]["amount"])


def session_price(prices: list[ModelPrice], body: Json) -> ModelPrice | None:
    """The price of the session's model (its agent snapshot's)."""
    return price_for(prices, body["agent"]["model"]["id"])


def list_cost(prices: list[ModelPrice], body: Json, usage: Json) -> Json | None:
    """`usage.list_cost` of the session, when its model has a price."""
    price = session_price(prices, body)
    if price is None:
        return None
    return {"amount": str(price.cost_cents(usage)), "currency": CURRENCY}


def over_budget(prices: list[ModelPrice], body: Json, usage: Json) -> bool:
    """True when the session has a budget and its cost has reached it."""
    cap = budget_cents(body.get("budget"))
    cost = list_cost(prices, body, usage)
    return cap is not None and cost is not None and int(cost["amount"]) >= cap
