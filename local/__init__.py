"""Local mode: the deployed query API on 127.0.0.1, over a folder of documents, with no AWS account.

The HTTP server hands every request to the query Lambda's own handler (`query.handler.main`);
this package supplies what the deployed stage gets from AWS: retrieval (an embedded store with
vector and hybrid search) and generators (extractive, an optional local LLM, Bedrock when the user
has credentials). See local/README.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Local mode never runs on EC2 by assumption: without this, botocore's credential and region
# lookups (the bedrock generator's status) would try the instance metadata service, a network
# call, whenever no credentials are configured.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

ROOT = Path(__file__).resolve().parent.parent
# The Lambda code root, as the Lambda runtime puts it on the path (`query`, `shared`).
_LAMBDA = str(ROOT / "lambda")
if _LAMBDA not in sys.path:
    sys.path.insert(0, _LAMBDA)
