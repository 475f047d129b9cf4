#!/usr/bin/env python3
"""CDK entry point: builds the stacks of the selected stage(s) from the typed config in cdk.json.

    cdk synth                 # the default stage (dev)
    cdk synth -c stage=prod   # one stage
    cdk synth -c stage=all    # every stage
"""

from __future__ import annotations

from typing import Any, Optional

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from stacks.config import ConfigError, load_config
from stacks.stage import StageStacks, build_stage

DEFAULT_STAGE = "dev"


def build_app(context: Optional[dict[str, Any]] = None, outdir: Optional[str] = None) -> tuple[cdk.App, list[StageStacks]]:
    """Builds the app; `context` (tests) replaces what the CDK CLI passes from cdk.json and -c."""
    # CDK's built-in CloudFormation validation costs ~4 s per synth (more than everything else
    # together) and duplicates the schema checks cfn-lint runs on every template in the tests.
    app = cdk.App(context=context, outdir=outdir, builtin_cloud_formation_validation=False)
    config = load_config({"stages": app.node.try_get_context("stages")})
    selected = app.node.try_get_context("stage") or DEFAULT_STAGE
    stages = [build_stage(app, stage) for stage in config.select(selected)]
    # cdk-nag 3 is a policy-validation plugin: an unacknowledged finding fails the synth.
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app, stages


if __name__ == "__main__":
    try:
        application, _ = build_app()
    except ConfigError as error:
        raise SystemExit(f"cdk.json: {error}") from None
    application.synth()
