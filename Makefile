# The two commands a newcomer needs (see README):
#   make demo   — the whole pipeline on this machine, alerts arriving in chat format
#   make test   — install everything from scratch and run every check and test
# Each makes its own virtual environment on first use.

PYTHON ?= python3
VENV_DEMO := .venv-demo
VENV_TEST := .venv

.PHONY: demo test lint build clean bench fuzz drills

$(VENV_DEMO)/.installed: pyproject.toml
	rm -rf $(VENV_DEMO)
	$(PYTHON) -m venv $(VENV_DEMO)
	$(VENV_DEMO)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(VENV_DEMO)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[local]'
	touch $@

$(VENV_TEST)/.installed: pyproject.toml
	rm -rf $(VENV_TEST)
	$(PYTHON) -m venv $(VENV_TEST)
	$(VENV_TEST)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(VENV_TEST)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

demo: $(VENV_DEMO)/.installed
	$(VENV_DEMO)/bin/python -m devstack demo $(DEMO_ARGS)

lint: $(VENV_TEST)/.installed
	$(VENV_TEST)/bin/ruff check .
	$(VENV_TEST)/bin/ruff format --check .
	$(VENV_TEST)/bin/mypy src functions node_shipper devstack bench
	$(VENV_TEST)/bin/cfn-lint template.yaml

build:
	scripts/sam-build.sh

test: $(VENV_TEST)/.installed lint build
	$(VENV_TEST)/bin/python -m pytest

# ingest's fuzz target at length (GPULSE_FUZZ_EXAMPLES, default 3000); CI runs 150 examples
fuzz: $(VENV_TEST)/.installed
	$(VENV_TEST)/bin/python -m pytest -m fuzz tests/integration/test_ingest_fuzz.py -p no:cacheprovider

# the drills at length: the shipper with ingest down 5 min, kill -9 x30, a full disk (about 15 min,
# needs root for the tmpfs; prints DRILL lines with the figures), and the alert path's model test at
# 500 examples; short versions of each run in the default suite.
drills: $(VENV_TEST)/.installed
	GPULSE_DRILLS=1 $(VENV_TEST)/bin/python -m pytest -m drill tests/integration/test_shipper_drills.py -s -p no:cacheprovider
	GPULSE_MODEL_EXAMPLES=500 $(VENV_TEST)/bin/python -m pytest tests/integration/test_alert_model.py -p no:cacheprovider --timeout 3600

bench: $(VENV_TEST)/.installed
	$(VENV_TEST)/bin/python bench/bench_codec.py
	$(VENV_TEST)/bin/python bench/bench_analyze.py
	$(VENV_TEST)/bin/python bench/bench_cold_start.py --baseline HEAD

clean:
	rm -rf $(VENV_DEMO) $(VENV_TEST) .venv-sam .aws-sam .gpulse-local
