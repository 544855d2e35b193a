"""What a model call cost, in USD, from its token usage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from vigil.activities.models.base import Usage


class Price(NamedTuple):
    """USD per one million tokens."""

    input: float
    output: float


# APPROXIMATE public list prices (USD per 1M tokens, standard tier, no caching or batch
# discounts) as published by OpenAI and Anthropic in 2025. Vendors change them: treat
# the figures as estimates for budgets and dashboards, not invoices, and override them
# with ``cost_usd(..., prices=...)`` where exact numbers matter.
PRICES: dict[str, Price] = {
    # OpenAI
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "o3": Price(2.00, 8.00),
    "o3-mini": Price(1.10, 4.40),
    "o4-mini": Price(1.10, 4.40),
    "gpt-5": Price(1.25, 10.00),
    "gpt-5-mini": Price(0.25, 2.00),
    "gpt-5-nano": Price(0.05, 0.40),
    # Anthropic
    "claude-3-haiku": Price(0.25, 1.25),
    "claude-3-5-haiku": Price(0.80, 4.00),
    "claude-3-5-sonnet": Price(3.00, 15.00),
    "claude-3-7-sonnet": Price(3.00, 15.00),
    "claude-sonnet-4": Price(3.00, 15.00),
    "claude-sonnet-4-5": Price(3.00, 15.00),
    "claude-haiku-4-5": Price(1.00, 5.00),
    "claude-opus-4": Price(15.00, 75.00),
    "claude-opus-4-1": Price(15.00, 75.00),
    "claude-opus-4-5": Price(5.00, 25.00),
}


def price_of(model: str, prices: Mapping[str, tuple[float, float]] | None = None) -> Price | None:
    """The price entry for a model name, or None when it is unknown.

    Matches the exact name first, then the longest entry the name extends with a ``-``
    suffix, so dated snapshots (``gpt-4o-2024-08-06``, ``claude-3-5-sonnet-20241022``)
    find their family. A router prefix such as ``openai/`` is ignored.
    """
    table = {key.lower(): value for key, value in {**PRICES, **(prices or {})}.items()}
    name = model.rsplit("/", 1)[-1].lower()
    if name in table:
        return Price(*table[name])
    matches = [key for key in table if name.startswith(key + "-")]
    if not matches:
        return None
    return Price(*table[max(matches, key=len)])


def cost_usd(
    model: str, usage: Usage, prices: Mapping[str, tuple[float, float]] | None = None
) -> float:
    """USD for one call; 0.0 for unknown and local models (scripted, Ollama, vLLM...).

    ``prices`` entries (model -> (input, output) USD per 1M tokens) override the table.
    """
    price = price_of(model, prices)
    if price is None:
        return 0.0
    return (usage.input_tokens * price.input + usage.output_tokens * price.output) / 1_000_000
