"""First state of the training pipeline: validate the execution input, check S3, name the jobs.

Returns the working input of the state machine (see rules.prepare). An invalid request raises
`InvalidTrainingInput`, whose name the state machine catches to notify and stop before any job.
"""

from __future__ import annotations

import json
import os
from typing import Any

from aws_lambda_powertools import Logger

from shared import aws_clients

from . import rules

logger = Logger()
_settings: rules.Settings | None = None


class InvalidTrainingInput(Exception):
    """The execution input breaks a rule; the message lists every problem."""


def settings() -> rules.Settings:
    global _settings
    if _settings is None:
        _settings = rules.Settings.from_env(os.environ)
    return _settings


def handle(event: Any, config: rules.Settings, s3) -> dict[str, Any]:
    try:
        prepared = rules.prepare(event, config, s3)
    except rules.InputError as error:
        logger.warning("invalid training input", extra={"problems": error.problems})
        raise InvalidTrainingInput(json.dumps(error.problems)) from None
    logger.info("training input accepted", extra={"job_name": prepared["job_name"], "checks": prepared["checks"]})
    return prepared


@logger.inject_lambda_context
def main(event: Any, context: Any) -> dict[str, Any]:
    aws_clients.set_deadline(context)
    return handle(event, settings(), aws_clients.client("s3", read_timeout=10.0))
