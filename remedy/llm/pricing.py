"""What a model call costs: prices per million tokens from `[llm].prices`, dated snapshots too."""

from __future__ import annotations

import re
from collections.abc import Mapping

from remedy.config import ModelPrice
from remedy.llm.conversation import OLLAMA, BackendName

_SNAPSHOT = re.compile(r"^-(\d{8}|latest)$")


def price_for(model: str, prices: Mapping[str, ModelPrice]) -> ModelPrice | None:
    """The price of `model`, or of the model it is a dated snapshot of (`<name>-20250929`)."""
    if model in prices:
        return prices[model]
    for name, price in prices.items():
        if model.startswith(name) and _SNAPSHOT.match(model[len(name) :]):
            return price
    return None


def estimate_cost(
    backend: BackendName,
    model: str,
    input_tokens: int,
    output_tokens: int,
    prices: Mapping[str, ModelPrice],
) -> tuple[float, bool]:
    """(US dollars, whether the model had a price). Unlisted local models cost nothing."""
    price = price_for(model, prices)
    if price is None:
        return 0.0, backend == OLLAMA
    cost = (input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok) / 1e6
    return cost, True
