"""A Bedrock model as the query function calls it: the ARN to call, and exactly the grants that form needs.

Bedrock offers a model in a region in one of two forms (or not at all):
- on demand, in the region: call the foundation-model ARN
  `arn:<partition>:bedrock:<region>::foundation-model/<model id>`; grant InvokeModel on it;
- only through a cross-region inference profile `<geo>.<model id>` (geo: us, eu, apac):
  call `arn:<partition>:bedrock:<region>:<account>:inference-profile/<geo>.<model id>`; grant
  InvokeModel on the profile and on the foundation model in the regions the profile routes to
  (any region, but only through this profile: condition `bedrock:InferenceProfileArn`), and
  GetInferenceProfile on the profile (RetrieveAndGenerate reads it).

`MODEL_REGIONS` holds, for the models this project ships with, where each form exists (from
the Bedrock user guide's "Model support by AWS Region" tables; date and address below). The
choice is made at synth: literally when the stack's region is known, otherwise (an
environment-agnostic stack) with a CloudFormation mapping and conditions evaluated at deploy,
plus a template rule that stops the deploy in a region where the model has neither form.
A model id that already names a profile (`us.amazon.nova-lite-v1:0`) is used as given; any other
model id is called on demand in the stack's region.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Optional

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from constructs import Construct

# A model id with a geography prefix names a cross-region inference profile (a provider such as
# `meta.` or `ai21.` is not a geography).
GEOGRAPHIES = ("us", "eu", "apac", "jp", "au", "ca", "us-gov", "global")
PROFILE_ID = re.compile(r"^(" + "|".join(re.escape(g) for g in GEOGRAPHIES) + r")\.([a-z0-9-]+\.[a-zA-Z0-9.\-:]+)$")
# Construct ids (inside the BedrockModel) of what an environment-agnostic stack gets.
MAPPING_ID, RULE_ID, ON_DEMAND_CONDITION_ID, PROFILE_CONDITION_ID = "ByRegion", "RegionSupported", "OnDemand", "ViaProfile"
ON_DEMAND, PROFILE = "on-demand", "profile"


@dataclass(frozen=True)
class ModelRegions:
    on_demand: tuple[str, ...]  # regions that serve the model in-region, on demand
    profiles: Mapping[str, tuple[str, ...]]  # geography prefix -> source regions of its profile
    checked: str
    source: str

    def form(self, region: str) -> tuple[str, Optional[str]]:
        """(ON_DEMAND, None) or (PROFILE, "<geo>") for `region`; KeyError if the model is not there."""
        if region in self.on_demand:
            return ON_DEMAND, None
        for geo, regions in self.profiles.items():
            if region in regions:
                return PROFILE, geo
        raise KeyError(region)

    def regions(self) -> tuple[str, ...]:
        return tuple(sorted({*self.on_demand, *(r for regions in self.profiles.values() for r in regions)}))


MODEL_REGIONS: dict[str, ModelRegions] = {
    # In-region where Bedrock serves it on demand; elsewhere the geography's profile. Regions whose
    # profile geography the tables do not name (Canada, Israel) are left out: set
    # serving.bedrock_model_id to a profile id that works there.
    "amazon.nova-lite-v1:0": ModelRegions(
        on_demand=("ap-northeast-1", "ap-southeast-2", "ap-southeast-3", "eu-north-1", "eu-west-2", "me-central-1", "us-east-1", "us-gov-west-1"),
        profiles={
            "us": ("us-east-2", "us-west-1", "us-west-2"),
            "eu": ("eu-central-1", "eu-south-1", "eu-south-2", "eu-west-1", "eu-west-3"),
            "apac": ("ap-east-2", "ap-northeast-2", "ap-south-1", "ap-southeast-1", "ap-southeast-4", "ap-southeast-5", "ap-southeast-7"),
        },
        checked="2026-02-15",
        source="https://docs.aws.amazon.com/bedrock/latest/userguide/models-regions.html",
    ),
}


class UnsupportedModelRegionError(ValueError):
    def __init__(self, config_key: str, model_id: str, region: str, regions: tuple[str, ...]):
        super().__init__(
            f"invalid config {config_key}={model_id!r}: Bedrock offers it in {region} neither on demand nor through a "
            f"cross-region inference profile (it is offered in: {', '.join(regions)}); set {config_key} to a model "
            "or inference profile id available in that region"
        )


class BedrockModel(Construct):
    """Attributes: `invoke_arn` (what the function calls), `statements` (grants for every form),
    `profile_statements` (grants only the profile form needs), `profile_condition` (the
    CloudFormation condition under which `profile_statements` apply; None = always, when there
    are any), `model_id`.
    """

    def __init__(self, scope: Construct, construct_id: str, *, model_id: str, config_key: str) -> None:
        super().__init__(scope, construct_id)
        self.model_id = model_id
        self.foundation_model_id = model_id  # the model itself (without a profile's geography prefix)
        self.profile_statements: list[iam.PolicyStatement] = []
        self.profile_condition: Optional[cdk.CfnCondition] = None
        stack = cdk.Stack.of(self)
        profile = PROFILE_ID.match(model_id)
        known = MODEL_REGIONS.get(model_id)
        if profile is not None:
            self.invoke_arn = self._use_profile(model_id, profile.group(2))
        elif known is None:
            self.invoke_arn = _foundation_model_arn(stack, model_id)
        elif not cdk.Token.is_unresolved(stack.region):
            try:
                form, geo = known.form(stack.region)
            except KeyError:
                raise UnsupportedModelRegionError(config_key, model_id, stack.region, known.regions()) from None
            self.invoke_arn = _foundation_model_arn(stack, model_id) if form == ON_DEMAND else self._use_profile(f"{geo}.{model_id}", model_id)
        else:
            self.invoke_arn = self._choose_at_deploy(stack, model_id, known)
        self.statements = [iam.PolicyStatement(actions=["bedrock:InvokeModel"], resources=[self.invoke_arn])]

    def _use_profile(self, profile_id: str, model_id: str) -> str:
        """The profile's ARN in this region; fills `profile_statements`."""
        stack = cdk.Stack.of(self)
        return self._profile_grants(stack, stack.format_arn(service="bedrock", resource="inference-profile", resource_name=profile_id), model_id)

    def _profile_grants(self, stack: cdk.Stack, profile_arn: str, model_id: str) -> str:
        self.foundation_model_id = model_id
        any_region_model = stack.format_arn(service="bedrock", region="*", account="", resource="foundation-model", resource_name=model_id)
        self.profile_statements = [
            iam.PolicyStatement(
                sid="InvokeModelThroughProfile",
                actions=["bedrock:InvokeModel"],
                resources=[any_region_model],
                conditions={"StringEquals": {"bedrock:InferenceProfileArn": profile_arn}},
            ),
            iam.PolicyStatement(sid="ReadInferenceProfile", actions=["bedrock:GetInferenceProfile"], resources=[profile_arn]),
        ]
        return profile_arn

    def _choose_at_deploy(self, stack: cdk.Stack, model_id: str, known: ModelRegions) -> str:
        rows = {}
        for region in known.regions():
            form, geo = known.form(region)
            rows[region] = {"Form": form, "Profile": f"{geo}.{model_id}" if geo else "none"}
        mapping = cdk.CfnMapping(self, MAPPING_ID, mapping=rows)
        cdk.CfnRule(
            self,
            RULE_ID,
            assertions=[
                cdk.CfnRuleAssertion(
                    assert_=cdk.Fn.condition_contains(list(known.regions()), cdk.Aws.REGION),
                    assert_description=(
                        f"Bedrock offers {model_id} on demand or through a cross-region inference profile only in: "
                        f"{', '.join(known.regions())}. Deploy there, or set serving.bedrock_model_id to a model or "
                        "inference profile id available in this region."
                    ),
                )
            ],
        )
        on_demand = cdk.CfnCondition(self, ON_DEMAND_CONDITION_ID, expression=cdk.Fn.condition_equals(mapping.find_in_map(cdk.Aws.REGION, "Form"), ON_DEMAND))
        self.profile_condition = cdk.CfnCondition(self, PROFILE_CONDITION_ID, expression=cdk.Fn.condition_not(on_demand))
        profile_arn = stack.format_arn(service="bedrock", resource="inference-profile", resource_name=mapping.find_in_map(cdk.Aws.REGION, "Profile"))
        self._profile_grants(stack, profile_arn, model_id)
        return cdk.Token.as_string(cdk.Fn.condition_if(on_demand.logical_id, _foundation_model_arn(stack, model_id), profile_arn))


def _foundation_model_arn(stack: cdk.Stack, model_id: str) -> str:
    return stack.format_arn(service="bedrock", account="", resource="foundation-model", resource_name=model_id)
