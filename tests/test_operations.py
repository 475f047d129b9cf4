"""Operations over every synthesized template of every stage: alarms reach someone, every deploy
after the first succeeds (no export in use that a replacement would change, no retained fixed name
where a stack can be destroyed and redeployed), the stacks deploy in the contract's order, data is
kept in prod, and cdk.json carries the feature flags a new CDK app gets.

CloudFormation's own resource schemas (shipped with cfn-lint) say which properties force a
replacement (`createOnlyProperties`): that is the oracle for "changes when replaced" and for
"has a fixed name".
"""

from __future__ import annotations

import functools
import glob
import importlib.metadata
import importlib.util
import json
import os
import re
import tarfile
from pathlib import Path

import pytest

from stacks.constructs.alarms import alarm_topic_name
from stacks.stage import DEPLOY_ORDER

ROOT = Path(__file__).resolve().parents[1]
ALARM_TYPES = ("AWS::CloudWatch::Alarm", "AWS::CloudWatch::CompositeAlarm")
RETAIN = ("Retain", "RetainExceptOnCreate")
# Replacement-forcing properties an exported resource may set, and why its value still never
# changes: the domain's name is the stage's (`rag-<stage>-search`), fixed for its lifetime, and a
# named domain cannot be replaced at all (it upgrades in place: EnableVersionUpgrade).
STABLE_CREATE_ONLY = {("AWS::OpenSearchService::Domain", "DomainName")}
# Flags whose value deliberately differs from what `cdk init` writes, with the reason in cdk.json's
# commit and the README: weak references (Fn::GetStackOutput) are resolved once and never
# re-checked; the one reference that changes on replacement is passed through SSM instead.
FLAG_DEVIATIONS = {"@aws-cdk/core:defaultCrossStackReferences": "strong"}


def stage_of(stack_name: str) -> str:
    return stack_name.split("-", 1)[0]  # "RagDev"


def config_of(synth, stages):
    """The StageConfig of a StageStacks."""
    return next(config for config in synth.config.stages.values() if stages.storage.stack_name == f"{config.stack_prefix}-Storage")


def resources(template: dict, *types: str) -> dict[str, dict]:
    return {name: r for name, r in template.get("Resources", {}).items() if not types or r["Type"] in types}


@functools.lru_cache(maxsize=None)
def _provider_schemas() -> tuple[Path, dict[str, str]]:
    """cfn-lint's bundled CloudFormation schemas for us-east-1: (folder, resource type -> file id).

    Read as files: importing cfnlint.schema costs ~1.2 s in this process, and the lint
    itself runs in the forked workers.
    """
    data = Path(importlib.util.find_spec("cfnlint").submodule_search_locations[0]) / "data" / "schemas"
    return data / "resources", json.loads((data / "providers" / "us-east-1.json").read_text())


@functools.lru_cache(maxsize=None)
def create_only(resource_type: str) -> frozenset[str]:
    """Top-level properties whose change replaces the resource (empty for custom resources)."""
    folder, index = _provider_schemas()
    if resource_type not in index:
        return frozenset()
    schema = json.loads((folder / f"{index[resource_type]}.json").read_text())
    return frozenset(path.split("/")[2] for path in schema.get("createOnlyProperties", []))


def names_the_resource(prop: str) -> bool:
    return prop == "Name" or prop.endswith("Name")


def referenced_logical_id(value) -> str | None:
    """The resource an output value reads (Ref / Fn::GetAtt, possibly inside Fn::Join)."""
    if isinstance(value, dict):
        if "Ref" in value:
            return value["Ref"]
        if "Fn::GetAtt" in value:
            return value["Fn::GetAtt"][0]
        for inner in value.values():
            found = referenced_logical_id(inner)
            if found:
                return found
    if isinstance(value, list):
        for inner in value:
            found = referenced_logical_id(inner)
            if found:
                return found
    return None


def imports_in(node) -> list[str]:
    if isinstance(node, dict):
        found = [node["Fn::ImportValue"]] if "Fn::ImportValue" in node else []
        return found + [name for inner in node.values() for name in imports_in(inner)]
    if isinstance(node, list):
        return [name for inner in node for name in imports_in(inner)]
    return []


@pytest.fixture(scope="module")
def templates(synth) -> dict[str, dict]:
    return {name: synth.template(name) for name in synth.stack_names}


# --- alarms reach someone --------------------------------------------------------------------------


def topic_of(action) -> str | None:
    """The topic name an alarm action addresses (built from the name, stacks/constructs/serving_alarms.py)."""
    if isinstance(action, dict) and "Fn::Join" in action:
        parts = action["Fn::Join"][1]
        last = parts[-1] if isinstance(parts[-1], str) else ""
        return last.rsplit(":", 1)[-1] if ":sns:" in "".join(p for p in parts if isinstance(p, str)) else None
    if isinstance(action, dict) and "Ref" in action:
        return action["Ref"]
    return None


def test_every_alarm_of_every_template_notifies_its_stages_topic(templates):
    alarms = 0
    for name, template in templates.items():
        expected = f"{stage_of(name)}-alarms"
        for logical_id, alarm in resources(template, *ALARM_TYPES).items():
            alarms += 1
            props = alarm["Properties"]
            for key in ("AlarmActions", "OKActions"):
                topics = [topic_of(action) for action in props.get(key, [])]
                assert expected in topics, f"{name}/{logical_id}: {key} lacks the topic {expected}: {props.get(key)}"
            # The topic's policy lets this stage's alarms publish: fixed names carry the stage's
            # prefix, generated ones start with the stack's name, which does.
            assert props.get("AlarmName", name).startswith(f"{stage_of(name)}-"), f"{name}/{logical_id}"
    assert alarms >= 2 * 13  # the stage alarms of both stages: search 6, ingestion 3, serving 4 (+ endpoint)


def test_the_alarm_test_sees_a_silent_alarm():
    template = {"Resources": {"A": {"Type": "AWS::CloudWatch::Alarm", "Properties": {"AlarmActions": []}}}}
    with pytest.raises(AssertionError, match="lacks the topic"):
        test_every_alarm_of_every_template_notifies_its_stages_topic({"RagQa-X": template})


def test_alarm_topic_names_are_the_contracts(synth):
    for stages in synth.stages:
        (topic,) = resources(synth.template(stages.monitoring.stack_name), "AWS::SNS::Topic").values()
        assert topic["Properties"]["TopicName"] == alarm_topic_name(config_of(synth, stages))


# --- later deploys succeed -----------------------------------------------------------------------------


def exports_by_name(templates: dict[str, dict]) -> dict[str, tuple[str, object]]:
    found = {}
    for stack, template in templates.items():
        for output in template.get("Outputs", {}).values():
            if "Export" in output:
                found[output["Export"]["Name"]] = (stack, output["Value"])
    return found


def replaceable_imports(templates: dict[str, dict]) -> list[str]:
    """Imports of an export whose value changes when its resource is replaced."""
    exports = exports_by_name(templates)
    problems = []
    for consumer, template in templates.items():
        for export in sorted(set(imports_in(template.get("Resources", {})))):
            producer, value = exports[export]
            logical_id = referenced_logical_id(value)
            if logical_id is None or logical_id.startswith("AWS::"):
                continue  # a literal or pseudo parameter
            resource = templates[producer]["Resources"][logical_id]
            forcing = sorted(prop for prop in resource.get("Properties", {}) if prop in create_only(resource["Type"])
                             and (resource["Type"], prop) not in STABLE_CREATE_ONLY)
            if forcing:
                problems.append(f"{consumer} imports {export}: {producer}/{logical_id} ({resource['Type']}) is replaced when {forcing} change")
    return problems


def test_no_stack_imports_a_value_that_changes_when_its_resource_is_replaced(templates):
    assert not replaceable_imports(templates), "\n".join(replaceable_imports(templates))
    assert sum(len(imports_in(t)) for t in templates.values()) > 10  # the check saw the stages' real imports


def test_the_import_check_catches_the_knowledge_base_case():
    """The case that deadlocked the README's index-rename procedure: an imported knowledge base id."""
    producer = {"Resources": {"KnowledgeBase": {"Type": "AWS::Bedrock::KnowledgeBase", "Properties": {"StorageConfiguration": {}}}},
                "Outputs": {"Id": {"Value": {"Fn::GetAtt": ["KnowledgeBase", "KnowledgeBaseId"]}, "Export": {"Name": "KbId"}}}}
    consumer = {"Resources": {"F": {"Type": "AWS::Lambda::Function", "Properties": {"Environment": {"Fn::ImportValue": "KbId"}}}}}
    assert replaceable_imports({"P": producer, "C": consumer}) == [
        "C imports KbId: P/KnowledgeBase (AWS::Bedrock::KnowledgeBase) is replaced when ['StorageConfiguration'] change"]


def unique_per_stack_instance(value) -> bool:
    """A name built from the stack's id (e.g. its UUID part) differs in every new stack instance."""
    return '"AWS::StackId"' in json.dumps(value)


def retained_fixed_names(templates: dict[str, dict], protected: dict[str, bool]) -> list[str]:
    problems = []
    for stack, template in templates.items():
        if protected[stack]:
            continue
        for logical_id, resource in resources(template).items():
            if resource.get("DeletionPolicy") not in RETAIN:
                continue
            properties = resource.get("Properties", {})
            named = sorted(p for p in properties if p in create_only(resource["Type"]) and names_the_resource(p)
                           and not unique_per_stack_instance(properties[p]))
            if named:
                problems.append(f"{stack}/{logical_id} ({resource['Type']}) is retained with fixed {named}: "
                                "a redeploy after destroy fails with AlreadyExists")
    return problems


def test_no_retained_resource_with_a_fixed_name_where_the_stack_can_be_destroyed(synth, templates):
    protected = {name: bool(synth.assembly.get_stack_by_name(name).termination_protection) for name in templates}
    problems = retained_fixed_names(templates, protected)
    assert not problems, "\n".join(problems)
    retained = [r for t in templates.values() for r in resources(t).values() if r.get("DeletionPolicy") in RETAIN]
    assert len(retained) > 20  # prod keeps data: the check had something to look at


def test_the_fixed_name_check_catches_a_retained_named_log_group():
    template = {"Resources": {"Logs": {"Type": "AWS::Logs::LogGroup", "DeletionPolicy": "Retain",
                                       "Properties": {"LogGroupName": "/aws/x", "RetentionInDays": 7}}}}
    assert retained_fixed_names({"S": template}, {"S": False})
    assert not retained_fixed_names({"S": template}, {"S": True})
    # a name that carries the stack's id is new in every stack instance: a redeploy never meets it
    stack_uuid = {"Fn::Select": [2, {"Fn::Split": ["/", {"Ref": "AWS::StackId"}]}]}
    template["Resources"]["Logs"]["Properties"]["LogGroupName"] = {"Fn::Join": ["-", ["/aws/x", stack_uuid]]}
    assert not retained_fixed_names({"S": template}, {"S": False})


def test_stacks_deploy_in_the_contracts_order(synth):
    for stages in synth.stages:
        ordered = stages.in_deploy_order()
        parts = [stack.stack_name.split("-", 1)[1] for stack in ordered]
        expected = list(DEPLOY_ORDER)
        training_imports = imports_in(synth.template(stages.training.stack_name))
        if any(export.startswith(f"{stages.inference.stack_name}:") for export in training_imports):
            # This branch: TrainingStack still takes the Inference stack (see stacks/stage.py).
            i, t = expected.index("Inference"), expected.index("Training")
            expected[i], expected[t] = expected[t], expected[i]
        assert parts == expected
        for before, after in zip(ordered, ordered[1:]):
            artifact = synth.assembly.get_stack_by_name(after.stack_name)
            assert before.stack_name in [dependency.id for dependency in artifact.dependencies], (before.stack_name, after.stack_name)


def test_monitoring_deploys_before_every_stack_with_alarms_and_imports_nothing(synth, templates):
    for stages in synth.stages:
        ordered = [stack.stack_name for stack in stages.in_deploy_order()]
        monitoring = stages.monitoring.stack_name
        for name in ordered:
            if resources(templates[name], *ALARM_TYPES):
                assert ordered.index(name) > ordered.index(monitoring), name
        assert not imports_in(templates[monitoring])


# --- nothing lost in prod --------------------------------------------------------------------------------


def test_log_groups_of_a_retained_stage_survive_their_stacks_and_every_log_group_is_on_the_stage_key(synth, templates):
    for stages in synth.stages:
        config = config_of(synth, stages)
        keep = "Retain" if config.retain_data else "Delete"
        for stack in (stages.search, stages.knowledge_base, stages.serving):
            for logical_id, group in resources(templates[stack.stack_name], "AWS::Logs::LogGroup").items():
                assert group["DeletionPolicy"] == keep, f"{stack.stack_name}/{logical_id}"
        # Questions, answers, document names and run requests can reach any of them: all on the
        # stage key, whose policy lets CloudWatch Logs use it (the Storage stack).
        groups = {f"{stack.stack_name}/{name}": group for stack in stages.in_deploy_order()
                  for name, group in resources(templates[stack.stack_name], "AWS::Logs::LogGroup").items()}
        assert len(groups) >= 15
        for name, group in groups.items():
            key = json.dumps(group["Properties"].get("KmsKeyId"))
            assert "DataKey" in key, name  # the stage key, imported from the Storage stack


# --- feature flags --------------------------------------------------------------------------------------


def recommended_flags() -> dict:
    """The flags `cdk init` writes for the installed aws-cdk-lib (its recommended-feature-flags.json)."""
    version = importlib.metadata.version("aws-cdk-lib")
    cache = os.environ.get("JSII_RUNTIME_PACKAGE_CACHE_ROOT", os.path.expanduser("~/.cache/aws/jsii/package-cache"))
    unpacked = glob.glob(os.path.join(cache, "aws-cdk-lib", version, "*", "recommended-feature-flags.json"))
    if unpacked:  # the jsii runtime unpacks the library there on first use (the session synth did)
        return json.loads(Path(unpacked[0]).read_text())
    import aws_cdk

    (bundle,) = glob.glob(str(Path(aws_cdk.__file__).parent / "_jsii" / f"aws-cdk-lib@{version}.jsii.tgz"))
    with tarfile.open(bundle) as archive:
        return json.load(archive.extractfile("package/recommended-feature-flags.json"))


def test_cdk_json_sets_every_recommended_feature_flag(synth):
    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    flags = recommended_flags()
    assert len(flags) > 80
    missing = sorted(set(flags) - set(context))
    assert not missing, f"cdk.json lacks recommended flags: {missing}"
    differing = {flag: context[flag] for flag in flags if context[flag] != flags[flag]}
    assert differing == FLAG_DEVIATIONS


def test_the_readme_says_what_each_alarm_means_and_what_to_do(synth, templates):
    operations = (ROOT / "README.md").read_text().split("## Operations", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z0-9-]+)` \|", operations, flags=re.MULTILINE))
    named = {props["AlarmName"].split("-", 1)[1] for t in templates.values() for r in resources(t, *ALARM_TYPES).values()
             if "AlarmName" in (props := r["Properties"])}
    assert named and named <= documented, sorted(named - documented)


def test_the_schema_files_say_what_cloudformation_replaces():
    assert {"BucketName"} <= create_only("AWS::S3::Bucket") and "LogGroupName" in create_only("AWS::Logs::LogGroup")
    assert "StorageConfiguration" in create_only("AWS::Bedrock::KnowledgeBase") and not create_only("AWS::KMS::Key")
    assert not create_only("Custom::VectorIndex")
