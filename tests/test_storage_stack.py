"""The storage stack's promises: encryption, versioning, TLS only, no public access, lifecycle, removal by stage."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Match

STAGES = [("RagDev-Storage", False), ("RagProd-Storage", True)]


def buckets(template: dict) -> dict[str, dict]:
    return {name: res for name, res in template["Resources"].items() if res["Type"] == "AWS::S3::Bucket"}


@pytest.mark.parametrize(("stack", "retained"), STAGES)
def test_four_buckets_all_versioned_private_and_encrypted(synth, stack, retained):
    found = buckets(synth.template(stack))
    assert len(found) == 4
    for name, bucket in found.items():
        props = bucket["Properties"]
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}, name
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, name
        rule = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        algorithm = rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"]
        # The access-log target must use SSE-S3 (log delivery cannot write SSE-KMS); data buckets use the key.
        assert algorithm == ("AES256" if name.startswith("AccessLogs") else "aws:kms"), name
        assert bucket["DeletionPolicy"] == ("Retain" if retained else "Delete"), name


@pytest.mark.parametrize(("stack", "retained"), STAGES)
def test_every_bucket_denies_plain_http(synth, stack, retained):
    template = synth.assertions(stack)
    policies = template.find_resources("AWS::S3::BucketPolicy")
    assert len(policies) == 4
    for policy in policies.values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        assert any(
            s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in statements
        )


@pytest.mark.parametrize(("stack", "retained"), STAGES)
def test_data_buckets_use_the_rotating_customer_key_and_log_access(synth, stack, retained):
    template = synth.assertions(stack)
    template.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    keys = template.find_resources("AWS::KMS::Key")
    (key_id,) = keys
    assert keys[key_id]["DeletionPolicy"] == ("Retain" if retained else "Delete")
    data = {n: b for n, b in buckets(synth.template(stack)).items() if not n.startswith("AccessLogs")}
    assert len(data) == 3
    for name, bucket in data.items():
        props = bucket["Properties"]
        default = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        assert default["ServerSideEncryptionByDefault"]["KMSMasterKeyID"] == {"Fn::GetAtt": [key_id, "Arn"]}, name
        assert default["BucketKeyEnabled"] is True
        assert props["LoggingConfiguration"]["DestinationBucketName"]["Ref"].startswith("AccessLogs"), name


@pytest.mark.parametrize(("stack", "retained"), STAGES)
def test_lifecycle_rules_abort_uploads_and_expire_old_versions(synth, stack, retained):
    config = synth.config.stages["prod" if retained else "dev"].storage
    for name, bucket in buckets(synth.template(stack)).items():
        rules = {rule["Id"]: rule for rule in bucket["Properties"]["LifecycleConfiguration"]["Rules"]}
        assert rules["AbortIncompleteUploads"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": config.abort_incomplete_upload_days}
        assert rules["ExpireNoncurrentVersions"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": config.noncurrent_version_expiry_days}
        if name.startswith("Artifacts"):
            assert rules["ExpireCheckpoints"]["Prefix"] == "checkpoints/"


@pytest.mark.parametrize(("stack", "retained"), STAGES)
def test_documents_bucket_sends_events_to_eventbridge(synth, stack, retained):
    synth.assertions(stack).has_resource_properties(
        "Custom::S3BucketNotifications",
        {"BucketName": {"Ref": Match.string_like_regexp("^Documents")}, "NotificationConfiguration": {"EventBridgeConfiguration": {}}},
    )


@pytest.mark.parametrize(("stack", "retained"), STAGES)
def test_dev_empties_buckets_on_delete_and_prod_does_not(synth, stack, retained):
    auto_delete = synth.assertions(stack).find_resources("Custom::S3AutoDeleteObjects")
    assert len(auto_delete) == (0 if retained else 4)


@pytest.mark.parametrize(("stack", "retained"), STAGES)
def test_the_stage_key_lets_cloudwatch_logs_encrypt_this_accounts_log_groups_only(synth, stack, retained):
    (key,) = [r for r in synth.template(stack)["Resources"].values() if r["Type"] == "AWS::KMS::Key"]
    (statement,) = [s for s in key["Properties"]["KeyPolicy"]["Statement"] if s.get("Sid") == "CloudWatchLogsEncryptsLogGroups"]
    assert statement["Principal"] == {"Service": {"Fn::Join": ["", ["logs.", {"Ref": "AWS::Region"}, ".amazonaws.com"]]}}
    condition = json.dumps(statement["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"])
    assert condition.endswith(':log-group:*"]]}') and "AWS::AccountId" in condition and "AWS::Region" in condition


def test_stacks_are_tagged_and_prod_stateful_stacks_are_protected(synth):
    for name in synth.stack_names:
        stack = synth.assembly.get_stack_by_name(name)
        stage = "prod" if name.startswith("RagProd-") else "dev"
        assert stack.tags == {"project": "rag-on-aws-accelerators", "stage": stage}, name
    stateful = {"RagProd-Storage": True, "RagDev-Storage": False}
    for stage_stacks in synth.stages:
        storage = stage_stacks.storage
        assert storage.termination_protection == stateful[storage.stack_name]
