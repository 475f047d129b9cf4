"""cfn-lint, CloudFormation's schema as an oracle: what it checks and which warnings we accept."""

from __future__ import annotations

import json

# cfn-lint warnings we accept, each with why. Errors are never accepted.
ACCEPTED_WARNINGS = {
    # CDK's own constructs (e.g. the BucketNotificationsHandler) add a DependsOn that a GetAtt
    # already implies; harmless, and not ours to change.
    "W3005",
}
LINT_REGIONS = ["us-east-1", "us-west-2"]  # regions with both trn1 and inf2 SageMaker capacity
PROBE_NAME = "probe-with-a-misspelled-property"


_runner = None  # one per worker process: building cfn-lint's rule set costs ~0.5 s


def lint_template(name: str, template_json: str) -> tuple[str, list[str]]:
    """Lints one template; returns its name and the findings not on the accepted list."""
    global _runner
    from cfnlint.config import ConfigMixIn
    from cfnlint.decode.decode import decode_str
    from cfnlint.runner import Runner

    if _runner is None:
        _runner = Runner(ConfigMixIn(regions=LINT_REGIONS))
    template, matches = decode_str(template_json)
    if not matches:
        matches = list(_runner.validate_template(template))
    return name, [f"{name}: {match}" for match in matches if match.rule.id not in ACCEPTED_WARNINGS]


def probe_template() -> tuple[str, str]:
    """A template with a known schema error, linted with the others to prove the oracle is live."""
    template = {"Resources": {"Bucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketNme": "x"}}}}
    return PROBE_NAME, json.dumps(template)
