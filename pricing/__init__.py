"""List prices as data (`prices.json`, with the date they were checked), and the arithmetic on them.

One table for every consumer: the README's always-on cost per stage, the dashboard's cost widget
and the evaluation's cost per 1,000 queries. Prices are on-demand, in `region`, in `currency`.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

PRICES_FILE = Path(__file__).with_name("prices.json")


class UnknownPrice(KeyError):
    """The table has no price for this item: add it to prices.json (with the date it was checked)."""


@lru_cache(maxsize=None)
def prices() -> dict[str, Any]:
    return json.loads(PRICES_FILE.read_text())


def _lookup(table: str, key: str) -> Any:
    try:
        return prices()[table][key]
    except KeyError:
        raise UnknownPrice(f"{PRICES_FILE.name}: no {table} price for {key!r}") from None


def sagemaker_hosting_per_hour(instance_type: str) -> float:
    return float(_lookup("sagemaker_hosting_per_hour", instance_type))


def sagemaker_training_per_hour(instance_type: str) -> float:
    return float(_lookup("sagemaker_training_per_hour", instance_type))


def opensearch_instance_per_hour(instance_type: str) -> float:
    return float(_lookup("opensearch_instance_per_hour", instance_type))


def opensearch_storage_per_hour(gib: int) -> float:
    return float(prices()["opensearch_gp3_gib_month"]) * gib / hours_per_month()


def bedrock_tokens_cost(model_id: str, input_tokens: int, output_tokens: int) -> float:
    """Cost of one call; `model_id` may carry a cross-region profile prefix (us., eu., ...)."""
    table = prices()["bedrock_per_1k_tokens"]
    key = model_id if model_id in table else model_id.split(".", 1)[-1]
    rates = _lookup("bedrock_per_1k_tokens", key)
    return (input_tokens * rates["input"] + output_tokens * rates["output"]) / 1000.0


def hours_per_month() -> float:
    """The hours in the average month every monthly figure here assumes (730)."""
    return float(prices()["hours_per_month"])


def region() -> str:
    """The region the figures are for."""
    return prices()["region"]


def checked() -> str:
    """The date the figures were last checked (YYYY-MM-DD)."""
    return prices()["checked"]
