"""The serving record's format: what the pipeline writes, CloudFormation splits and the Lambda parses."""

from __future__ import annotations

import pytest

from shared import model_record as mr


def test_round_trip():
    value = mr.format_record(7, "models/ragdev-ft-1/output/model/")
    assert value == "7|models/ragdev-ft-1/output/model/"
    assert mr.parse_record(value) == mr.Record(version="7", model_prefix="models/ragdev-ft-1/output/model/")


def test_none_means_not_deployed():
    assert mr.parse_record("none") is None


@pytest.mark.parametrize(
    "value",
    ["", "None", "7", "7|", "|models/a/", "0|models/a/", "-1|models/a/", "7|models/a", "7|base-models/a/",
     "7|models/", "7|models/../", "7|models/a/|x", "1234567890|models/a/", "07|models/a/", " 7|models/a/"],
)
def test_bad_records_are_refused(value):
    with pytest.raises(mr.RecordError):
        mr.parse_record(value)


def test_parameter_names():
    assert mr.record_parameter("dev", "base") == "/rag/dev/serving/base"
    assert mr.record_parameter("prod", "finetuned") == "/rag/prod/serving/finetuned"
    assert mr.power_parameter("dev") == "/rag/dev/serving/endpoint"
    with pytest.raises(ValueError):
        mr.record_parameter("dev", "bedrock")


def test_power():
    assert mr.parse_power("on") is True
    assert mr.parse_power("off") is False
    for bad in ("", "ON", "true", "none"):
        with pytest.raises(mr.RecordError):
            mr.parse_power(bad)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("ragdev-generator-b3-f7-0123abcd", {"base": "3", "finetuned": "7"}),
        ("ragdev-generator-b0-f12-ffffffff", {"base": None, "finetuned": "12"}),
        ("ragprod-generator-b5-f0-00000000", {"base": "5", "finetuned": None}),
    ],
)
def test_versions_from_config_name(name, expected):
    assert mr.versions_from_config_name(name) == expected


@pytest.mark.parametrize("name", ["", "EndpointConfig-AbCdEf", "ragdev-generator-b3-f7", "x-b3-f7-0123ABCD", "x-b03-f7-0123abcd", "x-b3-f7-0123abcd-x"])
def test_config_names_without_versions_are_refused(name):
    with pytest.raises(mr.RecordError):
        mr.versions_from_config_name(name)
