"""List prices of models, for session budgets: what a session's token usage costs, in US cents.

Prices come from configuration only (they change, and a self-hosted model may be free): a session can have
a budget only when its model has a configured price.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Any

CURRENCY = "USD"


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens for the model ids matching `match` (a shell-style pattern)."""

    match: str
    input: float
    output: float
    cache_read: float = 0.0
    cache_write: float = 0.0

    def matches(self, model_id: str) -> bool:
        return fnmatch.fnmatchcase(model_id, self.match)

    def cost_cents(self, usage: dict[str, Any]) -> int:
        """The list cost of `usage` (a session usage object), rounded up to a whole cent."""
        cache_creation = usage.get("cache_creation") or {}
        cache_write_tokens = sum(int(value or 0) for value in cache_creation.values())
        dollars = (
            int(usage.get("input_tokens") or 0) * self.input
            + int(usage.get("output_tokens") or 0) * self.output
            + int(usage.get("cache_read_input_tokens") or 0) * self.cache_read
            + cache_write_tokens * self.cache_write
        ) / 1_000_000
        return math.ceil(round(dollars * 100, 9))


def parse_prices(raw: Any) -> list[ModelPrice]:
    """Prices from config: a list of {match, input, output, cache_read?, cache_write?} (USD per MTok)."""
    if not isinstance(raw, list):
        raise ValueError("model prices must be a list of {match, input, output, cache_read?, cache_write?}")
    prices = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict) or not entry.get("match"):
            raise ValueError(f"model price {index} must be a table with match, input and output")
        try:
            values = {key: float(entry.get(key, 0.0)) for key in ("input", "output", "cache_read", "cache_write")}
        except (TypeError, ValueError) as exc:
            raise ValueError(f"model price {index}: prices must be numbers (USD per million tokens)") from exc
        if "input" not in entry or "output" not in entry or any(value < 0 for value in values.values()):
            raise ValueError(f"model price {index} needs non-negative input and output prices")
        prices.append(ModelPrice(match=str(entry["match"]), **values))
    return prices


def price_for(prices: list[ModelPrice], model_id: str) -> ModelPrice | None:
    return next((price for price in prices if price.matches(model_id)), None)
