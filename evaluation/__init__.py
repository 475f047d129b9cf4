"""Evaluation: run an eval set against a target (a deployed stage or the local server) over every
mode x retriever x generator it has, score the answers with confidence intervals, and report.

Standard library only (boto3/botocore only for a deployed stage and the optional judge), so it
runs anywhere the project's venv does. Entry point: `scripts/evaluate.py` (`evaluation.cli`).
"""
