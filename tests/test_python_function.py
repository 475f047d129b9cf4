"""The project's Lambda construct: what goes into the asset and the defaults every function gets."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_logs as logs
from aws_cdk.assertions import Template

from stacks.constructs.python_function import LAMBDA_ROOT, RUNTIME, PythonFunction

SOURCE = "vector_index"  # any handler folder works; this one has no dependency on the others


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    stray = LAMBDA_ROOT / SOURCE / "__pycache__" / "stray-for-test.cpython-311.pyc"
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"bytecode")  # what a local test run leaves behind: must not reach the asset
    app = cdk.App(outdir=str(tmp_path_factory.mktemp("fn.out")))
    stack = cdk.Stack(app, "Fn")
    PythonFunction(stack, "Fn", source=SOURCE, description="test", timeout=cdk.Duration.seconds(10), log_retention=logs.RetentionDays.ONE_WEEK)
    try:
        assembly = app.synth()
    finally:
        stray.unlink()
    return assembly, Template.from_json(assembly.get_stack_by_name("Fn").template)


def test_asset_holds_only_the_handler_folder_and_shared_code(built):
    assembly, _ = built
    asset_dirs = [p for p in Path(assembly.directory).iterdir() if p.name.startswith("asset.")]
    assert len(asset_dirs) == 1
    files = {str(p.relative_to(asset_dirs[0])) for p in asset_dirs[0].rglob("*") if p.is_file()}
    assert f"{SOURCE}/handler.py" in files and "shared/opensearch_http.py" in files
    assert all(f.startswith((f"{SOURCE}/", "shared/")) for f in files), files
    assert not any("__pycache__" in f or f.endswith(".pyc") for f in files), files


def test_function_defaults(built):
    _, template = built
    (function,) = template.find_resources("AWS::Lambda::Function").values()
    props = function["Properties"]
    assert props["Runtime"] == RUNTIME.name
    assert props["Architectures"] == ["arm64"]
    assert props["Handler"] == f"{SOURCE}.handler.main"
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert props["LoggingConfig"]["LogFormat"] == "JSON"
    assert props["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"] == SOURCE
    template.has_parameter("*", {"Type": "AWS::SSM::Parameter::Value<String>", "Default": "/aws/service/powertools/python/arm64/python3.14/latest"})
    # No AWS managed policies on the role: logging is granted on the function's own log group.
    (role,) = template.find_resources("AWS::IAM::Role").values()
    assert "ManagedPolicyArns" not in role["Properties"]
    template.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 7})


def test_unknown_source_fails_with_the_folder_named():
    stack = cdk.Stack(cdk.App(), "Bad")
    with pytest.raises(ValueError, match="lambda/nope/handler.py does not exist"):
        PythonFunction(stack, "Fn", source="nope", description="x", timeout=cdk.Duration.seconds(3), log_retention=logs.RetentionDays.ONE_DAY)


def test_name_log_removal_and_log_key_are_options():
    from aws_cdk import aws_kms as kms

    stack = cdk.Stack(cdk.App(), "Options")
    key = kms.Key(stack, "Key")
    PythonFunction(stack, "Fn", source=SOURCE, description="x", timeout=cdk.Duration.seconds(3), log_retention=logs.RetentionDays.ONE_DAY,
                   function_name="RagQa-fn", log_removal_policy=cdk.RemovalPolicy.RETAIN, log_encryption_key=key)
    template = Template.from_stack(stack)
    template.has_resource_properties("AWS::Lambda::Function", {"FunctionName": "RagQa-fn"})
    (group,) = template.find_resources("AWS::Logs::LogGroup").values()
    assert group["DeletionPolicy"] == "Retain" and "LogGroupName" not in group["Properties"]  # a generated name: never blocks a redeploy
    assert group["Properties"]["KmsKeyId"] == {"Fn::GetAtt": [next(iter(template.find_resources("AWS::KMS::Key"))), "Arn"]}
