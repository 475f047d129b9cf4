"""One stage = the stacks named `Rag<Stage>-<Part>`, wired together through typed objects.

Deploy order, made explicit: each stack depends on the one before it, so `cdk deploy
--all` always runs them in this order, also where no reference implies it (the alarm topic and
the knowledge base id are found by name, not by export):

    Storage, Monitoring, Search, KnowledgeBase, Training, Inference, Serving

Monitoring comes right after Storage so the alarm topic exists before any alarm that notifies it.
Training comes before Inference: it creates the serving record (SSM parameters) that the
Inference stack resolves at deploy time, and it reaches the Inference stack only by name (the
model deployer asks CloudFormation to update it).

Stateful stacks (Storage, Search) are separate from the stateless ones so the latter can be
destroyed and redeployed; stages that retain data protect the stateful stacks, and Training too:
its model package group (the registry of every model version) is retained under a fixed name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import aws_cdk as cdk
from constructs import Construct

from stacks.config import StageConfig
from stacks.constructs.compliance import accept_inline_policies
from stacks.inference_stack import InferenceStack
from stacks.knowledge_base_stack import KnowledgeBaseStack
from stacks.monitoring_stack import MonitoringStack
from stacks.search_stack import SearchStack
from stacks.serving_stack import ServingStack
from stacks.storage_stack import StorageStack
from stacks.training_stack import TrainingStack

PROJECT_TAG = "rag-on-aws-accelerators"
DEPLOY_ORDER = ("Storage", "Monitoring", "Search", "KnowledgeBase", "Training", "Inference", "Serving")
StackT = TypeVar("StackT", bound=cdk.Stack)


@dataclass(frozen=True)
class StageStacks:
    """The stacks of one stage, for tests and for wiring."""

    storage: StorageStack
    monitoring: MonitoringStack = None
    search: SearchStack = None
    knowledge_base: KnowledgeBaseStack = None
    inference: InferenceStack = None  # always built; holds no endpoint when inference.enabled is false
    training: TrainingStack = None
    serving: ServingStack = None

    def in_deploy_order(self) -> list[cdk.Stack]:
        """The stacks in the order their dependencies make CloudFormation deploy them."""
        by_part = {stack.stack_name.split("-", 1)[1]: stack for stack in
                   (self.storage, self.monitoring, self.search, self.knowledge_base, self.training, self.inference, self.serving)}
        return [by_part[part] for part in DEPLOY_ORDER]


def build_stage(scope: Construct, stage: StageConfig) -> StageStacks:
    """Creates every stack of `stage` and chains them in deploy order."""
    storage = _new_stack(StorageStack, scope, stage, "Storage", protected=True)
    search = _new_stack(SearchStack, scope, stage, "Search", protected=True, storage=storage)
    knowledge_base = _new_stack(KnowledgeBaseStack, scope, stage, "KnowledgeBase", protected=False, storage=storage, search=search)
    training = _new_stack(TrainingStack, scope, stage, "Training", protected=True, storage=storage)
    inference = _new_stack(InferenceStack, scope, stage, "Inference", protected=False, storage=storage)
    serving = _new_stack(ServingStack, scope, stage, "Serving", protected=False, storage=storage, search=search,
                         knowledge_base=knowledge_base, inference=inference)
    # Built last so its dashboard can list every alarm by name; it deploys second (the chain below).
    alarm_names = [name for stack in (search, knowledge_base, inference, training, serving) for name in getattr(stack, "alarm_names", ())]
    monitoring = _new_stack(MonitoringStack, scope, stage, "Monitoring", protected=False, alarm_names=alarm_names)
    stacks = StageStacks(storage=storage, monitoring=monitoring, search=search, knowledge_base=knowledge_base,
                         inference=inference, training=training, serving=serving)
    ordered = stacks.in_deploy_order()
    for before, after in zip(ordered, ordered[1:]):
        after.add_stack_dependency(before, "deploy order of the stage (stacks/stage.py)")
    # Last, when every grant (some stacks add statements to roles of others) has made its policy.
    for stack in ordered:
        accept_inline_policies(stack)
    return stacks


def _new_stack(cls: type[StackT], scope: Construct, stage: StageConfig, part: str, *, protected: bool, **kwargs) -> StackT:
    """Creates stack `<prefix>-<part>` with the stage's environment, tags and protection."""
    environment = cdk.Environment(account=stage.account, region=stage.region) if stage.account or stage.region else None
    return cls(
        scope,
        f"{stage.stack_prefix}-{part}",
        stage=stage,
        env=environment,
        description=f"RAG on AWS accelerators ({stage.name}): {part}",
        termination_protection=protected and stage.retain_data,
        # Stack tags, which CloudFormation applies to every resource that supports tags
        # (`@aws-cdk/core:explicitStackTags`: Tags.of(stack) would tag the resources only).
        tags={"project": PROJECT_TAG, "stage": stage.name},
        **kwargs,
    )
