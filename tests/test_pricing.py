"""The price table: complete for every instance type config allows, and its arithmetic."""

from __future__ import annotations

import re

import pytest

import pricing
from stacks.config import INF2_NEURON_CORES, TRN1_NEURON_CORES


def test_every_configurable_accelerator_has_a_price():
    for instance_type in INF2_NEURON_CORES:
        assert pricing.sagemaker_hosting_per_hour(instance_type) > 0
    for instance_type in TRN1_NEURON_CORES:
        assert pricing.sagemaker_training_per_hour(instance_type) > 0


def test_the_table_says_when_it_was_checked():
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", pricing.checked())


def test_bedrock_cost_per_call_and_profile_prefix():
    direct = pricing.bedrock_tokens_cost("amazon.nova-lite-v1:0", 1000, 1000)
    assert direct == pytest.approx(0.00006 + 0.00024)
    assert pricing.bedrock_tokens_cost("us.amazon.nova-lite-v1:0", 1000, 1000) == pytest.approx(direct)
    assert pricing.bedrock_tokens_cost("amazon.nova-lite-v1:0", 0, 0) == 0


def test_unknown_items_name_the_file():
    with pytest.raises(pricing.UnknownPrice, match="prices.json"):
        pricing.sagemaker_hosting_per_hour("ml.g5.xlarge")
    with pytest.raises(pricing.UnknownPrice):
        pricing.bedrock_tokens_cost("anthropic.claude-x", 1, 1)


def test_storage_per_hour_is_monthly_price_over_hours():
    assert pricing.opensearch_storage_per_hour(730) == pytest.approx(pricing.prices()["opensearch_gp3_gib_month"])
