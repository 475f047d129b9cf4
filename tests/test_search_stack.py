"""The Search stack's promises, read from the session synth: the field notes' requirements for a
domain that backs a Bedrock knowledge base, and the vector-index custom resource's inputs."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest

STAGES = [("dev", "RagDev-Search"), ("prod", "RagProd-Search")]


@functools.lru_cache(maxsize=None)
def _read(path: str) -> dict:
    return json.loads(Path(path).read_text())


def template_of(synth, stack: str) -> dict:
    """The synthesized template, read once from the assembly directory (jsii round trips cost ~0.1 s each)."""
    return _read(str(Path(synth.assembly.directory) / f"{stack}.template.json"))


def resources(template: dict, kind: str) -> dict[str, dict]:
    return {name: res for name, res in template["Resources"].items() if res["Type"] == kind}


def only(template: dict, kind: str) -> tuple[str, dict]:
    found = resources(template, kind)
    assert len(found) == 1, f"expected one {kind}, found {list(found)}"
    return next(iter(found.items()))


def role_named(template: dict, prefix: str) -> tuple[str, dict]:
    (name,) = [n for n, r in template["Resources"].items() if r["Type"] == "AWS::IAM::Role" and n.startswith(prefix)]
    return name, template["Resources"][name]


def joined(value) -> str:
    """Flattens an Fn::Join (pseudo parameters as <Ref>) so tests can read ARNs."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        return "".join(joined(part) for part in value["Fn::Join"][1])
    if "Ref" in value:
        return f"<{value['Ref']}>"
    return json.dumps(value, sort_keys=True)


@pytest.mark.parametrize(("stage", "stack"), STAGES)
def test_engine_version_from_config_and_new_enough_for_knowledge_bases(synth, stage, stack):
    _, domain = only(template_of(synth, stack), "AWS::OpenSearchService::Domain")
    version = domain["Properties"]["EngineVersion"]
    assert version == f"OpenSearch_{synth.config.stages[stage].search.engine_version}"
    major, minor = map(int, re.fullmatch(r"OpenSearch_(\d+)\.(\d+)", version).groups())
    assert (major, minor) >= (2, 13)


@pytest.mark.parametrize(("stage", "stack"), STAGES)
def test_public_endpoint_https_tls12_and_encryption_everywhere(synth, stage, stack):
    _, domain = only(template_of(synth, stack), "AWS::OpenSearchService::Domain")
    props = domain["Properties"]
    assert "VPCOptions" not in props  # knowledge bases do not support VPC domains
    assert props["DomainEndpointOptions"] == {"EnforceHTTPS": True, "TLSSecurityPolicy": "Policy-Min-TLS-1-2-PFS-2023-10"}
    assert props["NodeToNodeEncryptionOptions"] == {"Enabled": True}
    at_rest = props["EncryptionAtRestOptions"]
    assert at_rest["Enabled"] is True
    assert "DataKey" in at_rest["KmsKeyId"]["Fn::ImportValue"]  # the project's key from the Storage stack


@pytest.mark.parametrize(("stage", "stack"), STAGES)
def test_fgac_master_is_the_index_custom_resource_role_and_no_password_exists(synth, stage, stack):
    template = template_of(synth, stack)
    _, domain = only(template, "AWS::OpenSearchService::Domain")
    security = domain["Properties"]["AdvancedSecurityOptions"]
    assert security["Enabled"] is True and security["InternalUserDatabaseEnabled"] is False
    assert security["AnonymousAuthEnabled"] is False
    master = security["MasterUserOptions"]
    assert set(master) == {"MasterUserARN"}
    admin_role = master["MasterUserARN"]["Fn::GetAtt"][0]
    handlers = [f for f in resources(template, "AWS::Lambda::Function").values()
                if f["Properties"].get("Handler") == "vector_index.handler.main"]
    assert len(handlers) == 1
    assert handlers[0]["Properties"]["Role"] == {"Fn::GetAtt": [admin_role, "Arn"]}
    text = json.dumps(template)
    assert "MasterUserPassword" not in text and "MasterUserName" not in text


@pytest.mark.parametrize(("stage", "stack"), STAGES)
def test_access_policy_names_only_the_three_roles(synth, stage, stack):
    template = template_of(synth, stack)
    _, domain = only(template, "AWS::OpenSearchService::Domain")
    statements = {s["Sid"]: s for s in domain["Properties"]["AccessPolicies"]["Statement"]}
    assert set(statements) == {"IndexAdmin", "KnowledgeBase", "Query"}
    principals = {s["Principal"]["AWS"]["Fn::GetAtt"][0] for s in statements.values()}
    assert principals == {role_named(template, p)[0] for p in ("IndexAdminRole", "KnowledgeBaseRole", "QueryRole")}
    assert '"*"' not in json.dumps([s["Principal"] for s in statements.values()])
    index = synth.config.stages[stage].search.index_name
    query = sorted(joined(r) for r in statements["Query"]["Resource"])
    assert [r.rsplit(":domain/", 1)[1] for r in query] == [f"rag-{stage}-search/{index}", f"rag-{stage}-search/{index}/_search"]
    assert statements["Query"]["Action"] == ["es:ESHttpGet", "es:ESHttpPost"]


@pytest.mark.parametrize(("stage", "stack"), STAGES)
def test_slow_application_and_audit_logs_go_to_cloudwatch(synth, stage, stack):
    template = template_of(synth, stack)
    _, domain = only(template, "AWS::OpenSearchService::Domain")
    publishing = domain["Properties"]["LogPublishingOptions"]
    assert set(publishing) == {"SEARCH_SLOW_LOGS", "INDEX_SLOW_LOGS", "ES_APPLICATION_LOGS", "AUDIT_LOGS"}
    groups = resources(template, "AWS::Logs::LogGroup")
    for option in publishing.values():
        assert option["Enabled"] is True
        assert option["CloudWatchLogsLogGroupArn"]["Fn::GetAtt"][0] in groups
    policy_name, policy = only(template, "AWS::Logs::ResourcePolicy")
    assert policy_name in domain["DependsOn"]  # OpenSearch checks it can write at create
    document = joined(policy["Properties"]["PolicyDocument"])
    assert '"Service":"es.amazonaws.com"' in document and "aws:SourceArn" in document
    retention = synth.config.stages[stage].search.log_retention_days
    assert all(g["Properties"]["RetentionInDays"] == retention for n, g in groups.items() if n.startswith("Logs"))


@pytest.mark.parametrize(("stage", "stack"), STAGES)
def test_a_new_engine_version_upgrades_the_domain_in_place(synth, stage, stack):
    """Without the update policy CloudFormation replaces the domain, which fails for a named one."""
    _, domain = only(template_of(synth, stack), "AWS::OpenSearchService::Domain")
    assert domain["UpdatePolicy"] == {"EnableVersionUpgrade": True}
    assert domain["Properties"]["DomainName"] == f"rag-{stage}-search"


@pytest.mark.parametrize(("stage", "stack"), STAGES)
def test_the_recommended_domain_alarms_exist_with_thresholds_from_its_sizing(synth, stage, stack):
    config = synth.config.stages[stage]
    alarms = {r["Properties"]["AlarmName"].removeprefix(f"{config.stack_prefix}-"): r["Properties"]
              for r in resources(template_of(synth, stack), "AWS::CloudWatch::Alarm").values()}
    expected = {  # AWS's recommended OpenSearch alarms: metric, statistic, threshold, periods of 1 or 5 minutes
        "search-cluster-red": ("ClusterStatus.red", "Maximum", 1, 60, 1),
        "search-cluster-yellow": ("ClusterStatus.yellow", "Maximum", 1, 60, 5),
        "search-free-storage": ("FreeStorageSpace", "Minimum", config.search.volume_size_gib * 1024 / 4, 60, 1),
        "search-jvm-pressure": ("JVMMemoryPressure", "Maximum", 95, 60, 3),
        "search-writes-blocked": ("ClusterIndexWritesBlocked", "Maximum", 1, 300, 1),
        "search-key-inaccessible": ("KMSKeyInaccessible", "Maximum", 1, 60, 1),
    }
    assert set(alarms) == set(expected)
    for name, (metric, statistic, threshold, period, periods) in expected.items():
        alarm = alarms[name]
        assert (alarm["MetricName"], alarm["Statistic"], alarm["Threshold"], alarm["Period"], alarm["EvaluationPeriods"]) == (
            metric, statistic, threshold, period, periods), name
        assert alarm["Namespace"] == "AWS/ES"
        assert alarm["Dimensions"] == [{"Name": "ClientId", "Value": {"Ref": "AWS::AccountId"}}, {"Name": "DomainName", "Value": f"rag-{stage}-search"}]
    assert alarms["search-free-storage"]["ComparisonOperator"] == "LessThanOrEqualToThreshold"


def test_sizing_dev_one_node_prod_multi_az_with_dedicated_masters(synth):
    dev = only(template_of(synth, "RagDev-Search"), "AWS::OpenSearchService::Domain")[1]["Properties"]["ClusterConfig"]
    assert dev["InstanceCount"] == 1 and dev["DedicatedMasterEnabled"] is False and dev["ZoneAwarenessEnabled"] is False
    prod = only(template_of(synth, "RagProd-Search"), "AWS::OpenSearchService::Domain")[1]["Properties"]["ClusterConfig"]
    config = synth.config.stages["prod"].search
    assert prod["InstanceCount"] == config.data_node_count >= 2
    assert prod["DedicatedMasterEnabled"] is True and prod["DedicatedMasterCount"] == 3
    assert prod["ZoneAwarenessEnabled"] is True and prod["ZoneAwarenessConfig"] == {"AvailabilityZoneCount": 2}


def test_prod_retains_the_domain_and_is_protected_dev_does_not(synth):
    for stage, stack in STAGES:
        _, domain = only(template_of(synth, stack), "AWS::OpenSearchService::Domain")
        assert domain["DeletionPolicy"] == ("Retain" if stage == "prod" else "Delete")
        manifest = _read(str(Path(synth.assembly.directory) / "manifest.json"))
        assert manifest["artifacts"][stack]["properties"].get("terminationProtection", False) == (stage == "prod")


@pytest.mark.parametrize(("stage", "stack"), STAGES)
def test_vector_index_properties_come_from_config_with_one_provider(synth, stage, stack):
    template = template_of(synth, stack)
    config = synth.config.stages[stage]
    _, index = only(template, "Custom::VectorIndex")
    props = index["Properties"]
    assert props["Endpoint"] == {"Fn::Join": ["", ["https://", {"Fn::GetAtt": ["Domain", "DomainEndpoint"]}]]}
    assert (props["IndexName"], props["VectorField"], props["TextField"], props["MetadataField"]) == (
        config.search.index_name, config.search.vector_field, config.search.text_field, config.search.metadata_field)
    assert props["FilterableFields"] == list(config.search.filterable_fields)
    assert props["Dimensions"] == config.knowledge_base.embedding_dimensions
    assert props["PipelineName"] == config.search.search_pipeline_name
    assert props["HybridWeights"] == pytest.approx([1 - config.search.hybrid_vector_weight, config.search.hybrid_vector_weight])
    assert props["RetainIndex"] is config.retain_data
    assert props["KnowledgeBaseRoleArn"]["Fn::GetAtt"][0].startswith("KnowledgeBaseRole")
    assert props["QueryRoleArn"]["Fn::GetAtt"][0].startswith("QueryRole")
    frameworks = [n for n in resources(template, "AWS::Lambda::Function") if "framework" in n]
    assert len(frameworks) == 1, frameworks
    assert props["ServiceToken"]["Fn::GetAtt"][0] == frameworks[0]


@pytest.mark.parametrize(("stage", "stack"), STAGES)
def test_knowledge_base_role_trusts_bedrock_for_this_account_with_inline_permissions_only(synth, stage, stack):
    template = template_of(synth, stack)
    name, role = role_named(template, "KnowledgeBaseRole")
    (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "bedrock.amazonaws.com"}
    assert trust["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert joined(trust["Condition"]["ArnLike"]["aws:SourceArn"]).endswith(":knowledge-base/*")
    assert "ManagedPolicyArns" not in role["Properties"]
    attached = [p for p in resources(template, "AWS::IAM::Policy").values()
                if {"Ref": name} in p["Properties"].get("Roles", [])]
    assert attached == []  # a separately attached policy races the knowledge base's creation (403)
    (policy,) = role["Properties"]["Policies"]
    statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    index = f"rag-{stage}-search/{synth.config.stages[stage].search.index_name}"
    assert joined(statements["IndexDocuments"]["Resource"]).endswith(f":domain/{index}/*")
    assert joined(statements["IndexItself"]["Resource"]).endswith(f":domain/{index}")
    assert statements["DescribeDomain"]["Action"] == "es:DescribeDomain"
    assert joined(statements["Embed"]["Resource"]).endswith("::foundation-model/amazon.titan-embed-text-v2:0")
    assert statements["ListDocuments"]["Condition"] == {"StringLike": {"s3:prefix": ["documents/", "documents/*"]}}
    assert joined(statements["ReadDocuments"]["Resource"]).endswith("/documents/*")
    assert statements["DecryptDocuments"]["Action"] == "kms:Decrypt"


@pytest.mark.parametrize(("stage", "stack"), STAGES)
def test_query_role_may_only_search_the_index(synth, stage, stack):
    _, role = role_named(template_of(synth, stack), "QueryRole")
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}
    (policy,) = role["Properties"]["Policies"]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Action"] == ["es:ESHttpGet", "es:ESHttpPost"]
    assert sorted(joined(r).rsplit("/", 1)[1] for r in statement["Resource"]) == ["_search", synth.config.stages[stage].search.index_name]


def test_public_endpoint_acknowledgement_names_the_reason(synth):
    metadata = json.loads((Path(synth.assembly.directory) / "RagDev-Search.metadata.json").read_text())
    reasons = {rule.split("::", 1)[-1]: reason for entries in metadata.values() for entry in entries
               if entry["type"] == "aws:cdk:acknowledged-rules" for rule, reason in entry["data"].items()}
    assert "VPC" in reasons["AwsSolutions-OS1"]


def test_index_info_for_other_stacks_matches_config(synth):
    stage = synth.stage("dev")
    info = stage.search.index
    config = synth.config.stages["dev"]
    assert info.index_name == config.search.index_name and info.pipeline_name == config.search.search_pipeline_name
    assert info.embedding_dimensions == config.knowledge_base.embedding_dimensions
    assert info.hybrid_weights == pytest.approx((1 - config.search.hybrid_vector_weight, config.search.hybrid_vector_weight))
    assert stage.search.query_role is not None and stage.search.vector_index is not None
