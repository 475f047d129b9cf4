# Two commands a newcomer needs: `make synth` (every stack of every stage into cdk.out) and
# `make test` (the whole suite). Both create the venv and install the pinned tools on first use.

PYTHON ?= python3
VENV := .venv
# checkov pins an older boto3 than the project: it gets a venv of its own (tests/checkov_oracle.py).
CHECKOV_VENV := .venv-checkov
PY := $(VENV)/bin/python
CDK := node_modules/.bin/cdk
STAGE ?= all

# Keep jsii and the CDK CLI quiet and off the network.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION = 20
export CDK_DISABLE_VERSION_CHECK = 1

.PHONY: synth test bench diff deploy clean mutation

synth: $(VENV)/.installed node_modules/.installed
	$(CDK) synth --no-notices --quiet -c stage=$(STAGE)

test: $(VENV)/.installed $(CHECKOV_VENV)/.installed node_modules/.installed
	$(PY) -m pytest

bench: $(VENV)/.installed node_modules/.installed
	$(PY) scripts/bench.py

# Mutation testing (slow, not in CI): `make mutation` or `make mutation PATHS="lambda/vector_index"`.
# Summary in build/mutation/summary.md; see scripts/mutation.py.
PATHS ?=
mutation: $(VENV)/.installed $(VENV)/.mutmut
	$(PY) scripts/mutation.py $(PATHS)

$(VENV)/.mutmut: requirements-mutation.txt $(VENV)/.installed
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-mutation.txt
	touch $@

# Needs AWS credentials for the target account: review, then deploy one stage.
diff: $(VENV)/.installed node_modules/.installed
	$(CDK) diff --no-notices -c stage=$(STAGE)

deploy: $(VENV)/.installed node_modules/.installed
	$(CDK) deploy --no-notices -c stage=$(STAGE) --all

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

clean:
	rm -rf cdk.out build .pytest_cache
