"""The CDK app's stacks, their configuration and the project's own constructs."""
