"""One stage = the stacks named `Rag<Stage>-<Part>`, wired together through typed objects.

Stateful stacks (Storage, Search) are separate from the stateless ones so the latter can be
destroyed and redeployed freely; stages that retain data get termination protection on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import aws_cdk as cdk
from constructs import Construct

from stacks.config import StageConfig
from stacks.inference_stack import InferenceStack
from stacks.knowledge_base_stack import KnowledgeBaseStack
from stacks.search_stack import SearchStack
from stacks.serving_stack import ServingStack
from stacks.storage_stack import StorageStack
from stacks.training_stack import TrainingStack

PROJECT_TAG = "rag-on-aws-accelerators"
StackT = TypeVar("StackT", bound=cdk.Stack)


@dataclass(frozen=True)
class StageStacks:
    """The stacks of one stage, for tests and for wiring."""

    storage: StorageStack
    search: SearchStack = None
    knowledge_base: KnowledgeBaseStack = None
    inference: InferenceStack = None  # always built; holds no endpoint when inference.enabled is false
    training: TrainingStack = None
    serving: ServingStack = None


def build_stage(scope: Construct, stage: StageConfig) -> StageStacks:
    """Creates every stack of `stage`, in dependency order."""
    storage = _new_stack(StorageStack, scope, stage, "Storage", stateful=True)
    search = _new_stack(SearchStack, scope, stage, "Search", stateful=True, storage=storage)
    knowledge_base = _new_stack(KnowledgeBaseStack, scope, stage, "KnowledgeBase", stateful=False, storage=storage, search=search)
    # Training first (Contract 1): it creates the serving record that Inference resolves at deploy time.
    training = _new_stack(TrainingStack, scope, stage, "Training", stateful=False, storage=storage)
    inference = _new_stack(InferenceStack, scope, stage, "Inference", stateful=False, storage=storage)
    inference.add_stack_dependency(training, "the serving record's SSM parameters must exist before Inference resolves them")
    serving = _new_stack(ServingStack, scope, stage, "Serving", stateful=False, search=search, knowledge_base=knowledge_base, inference=inference)
    return StageStacks(storage=storage, search=search, knowledge_base=knowledge_base, inference=inference, training=training, serving=serving)


def _new_stack(cls: type[StackT], scope: Construct, stage: StageConfig, part: str, *, stateful: bool, **kwargs) -> StackT:
    """Creates stack `<prefix>-<part>` with the stage's environment, tags and protection."""
    environment = cdk.Environment(account=stage.account, region=stage.region) if stage.account or stage.region else None
    stack = cls(
        scope,
        f"{stage.stack_prefix}-{part}",
        stage=stage,
        env=environment,
        description=f"RAG on AWS accelerators ({stage.name}): {part}",
        termination_protection=stateful and stage.retain_data,
        **kwargs,
    )
    cdk.Tags.of(stack).add("project", PROJECT_TAG)
    cdk.Tags.of(stack).add("stage", stage.name)
    return stack
