# The two commands a newcomer needs (see README):
#   make demo   — the whole pipeline on this machine, alerts arriving in chat format
#   make test   — install everything from scratch and run every check and test
# Each makes its own virtual environment on first use.

PYTHON ?= python3
VENV_DEMO := .venv-demo
VENV_TEST := .venv

.PHONY: demo test lint build clean bench fuzz drills incident-e2e bench-fleet bench-detect bench-storage bench-ingest-load cost-model wheels wheel-test

$(VENV_DEMO)/.installed: pyproject.toml packages/wire/pyproject.toml packages/shipper/pyproject.toml
	rm -rf $(VENV_DEMO)
	$(PYTHON) -m venv $(VENV_DEMO)
	$(VENV_DEMO)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(VENV_DEMO)/bin/python -m pip install --quiet --disable-pip-version-check -e packages/wire -e packages/shipper -e '.[local]'
	touch $@

$(VENV_TEST)/.installed: pyproject.toml packages/wire/pyproject.toml packages/shipper/pyproject.toml
	rm -rf $(VENV_TEST)
	$(PYTHON) -m venv $(VENV_TEST)
	$(VENV_TEST)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(VENV_TEST)/bin/python -m pip install --quiet --disable-pip-version-check -e packages/wire -e packages/shipper -e '.[dev]'
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

# Two workers (TEST_WORKERS=0: all in this process): many tests wait on real processes and clocks, so
# a second file runs while one waits. A file's tests stay together on one worker (their
# module-scoped stacks are built once).
TEST_WORKERS ?= 2
test: $(VENV_TEST)/.installed lint build
	$(VENV_TEST)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# ingest's fuzz target at length (GPULSE_FUZZ_EXAMPLES, default 3000); CI runs 150 examples
fuzz: $(VENV_TEST)/.installed
	$(VENV_TEST)/bin/python -m pytest -m fuzz tests/integration/test_ingest_fuzz.py -p no:cacheprovider

# the drills at length: the shipper with ingest down 5 min, kill -9 x30, a full disk (about 15 min,
# needs root for the tmpfs; prints DRILL lines with the figures), and the alert path's model test at
# 500 examples; short versions of each run in the default suite.
drills: $(VENV_TEST)/.installed
	GPULSE_DRILLS=1 $(VENV_TEST)/bin/python -m pytest -m drill tests/integration/test_shipper_drills.py -s -p no:cacheprovider
	GPULSE_MODEL_EXAMPLES=500 $(VENV_TEST)/bin/python -m pytest tests/integration/test_alert_model.py -p no:cacheprovider --timeout 3600

# two stalled ranks end to end (ingest → analyze → alert → a local webhook), analyze every minute
# of the fleet's clock; the default suite runs it at the 7 minutes where something changes
incident-e2e: $(VENV_TEST)/.installed
	GPULSE_INCIDENT_E2E=1 $(VENV_TEST)/bin/python -m pytest -m incident tests/integration/test_incident_e2e.py -p no:cacheprovider

bench: $(VENV_TEST)/.installed
	$(VENV_TEST)/bin/python bench/bench_codec.py
	$(VENV_TEST)/bin/python bench/bench_fleet.py --quick --modes full incremental  # a rebuild every tick is the baseline
	$(VENV_TEST)/bin/python bench/bench_cold_start.py --baseline HEAD
	$(VENV_TEST)/bin/python bench/bench_chart.py

# stored bytes per sample (hot and long tier, as DynamoDB bills them) against Prometheus and
# VictoriaMetrics (installed from Debian if missing), then $/GPU-month from the same code (~5 min)
bench-storage: $(VENV_TEST)/.installed
	$(VENV_TEST)/bin/python bench/bench_storage.py --out bench/out/storage.json

cost-model: $(VENV_TEST)/.installed
	$(VENV_TEST)/bin/python bench/cost_model.py

# 1,250 signed shippers against the local ingest URL on 127.0.0.1 for 60 s (and a 404 baseline)
bench-ingest-load: $(VENV_TEST)/.installed
	mkdir -p bench/out
	$(VENV_TEST)/bin/python bench/bench_ingest_load.py | tee bench/out/ingest_load.jsonl

# the node's wheels (gpulse-wire, gpulse-shipper) into dist/; a node installs them with
# deploy/shipper-constraints.txt (docs/shipper.md)
wheels: $(VENV_TEST)/.installed
	rm -f dist/gpulse_wire-*.whl dist/gpulse_shipper-*.whl
	$(VENV_TEST)/bin/python -m pip wheel --quiet --disable-pip-version-check --no-deps -w dist packages/wire packages/shipper

# the shipper wheel installed alone into a clean venv with the constraints file, then run (~1 min)
wheel-test: $(VENV_TEST)/.installed
	GPULSE_WHEEL=1 $(VENV_TEST)/bin/python -m pytest -m wheel tests/integration/test_shipper_wheel.py -p no:cacheprovider

# analyze at fleet scale (docs/operations.md, "Analyze at scale"): 100 to 1,250 nodes × 8 GPUs, HEAD's
# code as the baseline, cold and warm ticks; then the warm-equals-cold checks at length. About 30 min.
bench-fleet: $(VENV_TEST)/.installed
	$(VENV_TEST)/bin/python bench/bench_fleet.py --nodes 100 250 500 1250 --warm-ticks 3 --moto
	GPULSE_WINDOW_EXAMPLES=500 GPULSE_WINDOW_SCENARIOS=all $(VENV_TEST)/bin/python -m pytest tests/unit/test_window_incremental.py -p no:cacheprovider

# the rules alone on one warm window of 250 and 1,250 nodes: CPU per detector against HEAD, and the
# findings compared with the plain code path's, field for field (docs/operations.md). About 15 min
# the first time (it builds and keeps the windows in the temp dir).
bench-detect: $(VENV_TEST)/.installed
	$(VENV_TEST)/bin/python bench/profile_detect.py --nodes 250 1250

clean:
	rm -rf $(VENV_DEMO) $(VENV_TEST) .venv-sam .aws-sam .gpulse-local
