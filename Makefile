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

.PHONY: synth test bench diff deploy clean mutation local local-llm eval

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

# Evaluate a target over every mode x retriever x generator it has (scripts/evaluate.py; README: Evaluation):
# `make eval URL=http://127.0.0.1:8787` (the local server) or `make eval STAGE=dev` (deployed, SigV4).
# EVAL_ARGS adds options, e.g. EVAL_ARGS="--load-corpus" or EVAL_ARGS="--eval-set my.json --split all".
eval: $(VENV)/.installed
	@if [ -z "$(URL)" ] && [ "$(STAGE)" = "all" ]; then echo "make eval: give URL=http://127.0.0.1:PORT (a local server) or STAGE=<stage> (a deployed stage)"; exit 2; fi
	$(PY) scripts/evaluate.py run $(if $(URL),--url $(URL),--stage $(STAGE)) $(EVAL_ARGS)

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-local.txt
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

# Local mode: the query API on 127.0.0.1:$(PORT) over the sample corpus, no AWS account needed.
# Installs only what it needs (requirements-local.txt) on first use, then indexes and serves.
PORT ?= 8787
local: $(VENV)/.local-installed
	PORT=$(PORT) $(PY) -m local serve

# The optional local LLM generator: compiles llama-cpp-python (~20 min on 2 cores). Portable
# x86-64 flags: the native build selects AMX kernels that crash on this kind of CPU, and
# --no-cache-dir keeps pip from reusing a wheel built with other flags.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF
local-llm: $(VENV)/.local-llm-installed

$(VENV)/.local-installed: requirements-local.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-local.txt
	touch $@

$(VENV)/.local-llm-installed: requirements-local-llm.txt $(VENV)/.local-installed
	@echo "Compiling llama-cpp-python from source: about 20 minutes on 2 cores."
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(VENV)/bin/pip install --disable-pip-version-check --no-cache-dir --no-deps -r requirements-local-llm.txt
	$(PY) -m local status llm --smoke
	touch $@

clean:
	rm -rf cdk.out build .pytest_cache
