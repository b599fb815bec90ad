# babelrs — the two commands: `make run` (main job on the embedded default) and `make test`.
# Both set up .venv first (see infra/local/setup.sh; the first setup on a machine compiles mmcv).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
BABELRS := $(VENV)/bin/babelrs
STAMP := $(VENV)/.babelrs-setup
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg
# Prefect: local state under outputs/, nothing reaches the internet, patient ephemeral start-up
export PREFECT_HOME ?= $(CURDIR)/outputs/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 180
export DO_NOT_TRACK := 1

.PHONY: champion-figure setup run ui test test-fast test-slow faults ablation ablation-recipe lint format preview lock clean help serve-scheduler gpu-check

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): requirements/lock.txt requirements/nodeps.txt infra/local/setup.sh pyproject.toml
	bash infra/local/setup.sh
	@touch $@

setup: $(STAMP)  ## create .venv from the lock file (+ once-per-machine mmcv build)

# Shell prefix of the commands that run a Prefect flow (make run, make ablation): when the Prefect
# server of `make ui` answers (its API URL in $(PREFECT_HOME)/api_url), the flow run goes there;
# otherwise the command starts an ephemeral API on $(PREFECT_HOME)/prefect.db.
FOLLOW_UI = api="$$(cat $(PREFECT_HOME)/api_url 2>/dev/null)"; \
	if [ -n "$$api" ] && $(PY) -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1] + "/health", timeout=3)' "$$api" 2>/dev/null; then \
		echo "make $@: flow runs go to the Prefect server of make ui ($$api)"; export PREFECT_API_URL="$$api"; fi

run: $(STAMP)  ## main job: the whole pipeline on SOI-mini through the Prefect flow, then the preview
	@$(FOLLOW_UI); \
	$(BABELRS) pipeline run
	$(BABELRS) data preview

lint: $(STAMP)  ## ruff (the same hook pre-commit runs) and mypy on babelrs_core/ (pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)  ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: $(STAMP) lint  ## lint, then the whole test suite (slow end-to-end tests included)
	@mkdir -p $(PREFECT_HOME)
	$(VENV)/bin/pytest -q

test-fast: $(STAMP)  ## the suite without the slow end-to-end tests
	@mkdir -p $(PREFECT_HOME)
	$(VENV)/bin/pytest -q -m "not slow"

test-slow: $(STAMP)  ## only the slow end-to-end tests
	@mkdir -p $(PREFECT_HOME)
	$(VENV)/bin/pytest -q -m slow

faults: $(STAMP)  ## the fault suite: kill -9, corrupt / trapped checkpoints, full disk, bad params, S3 down, leaks, concurrent runs
	@mkdir -p $(PREFECT_HOME)
	$(VENV)/bin/pytest -q tests/faults tests/orchestration/test_no_secrets.py \
		tests/e2e/test_dvc_s3.py::test_push_interrupted_by_stopping_the_server \
		tests/io/test_output_lock.py tests/orchestration/test_concurrent_flows.py \
		tests/registry/test_lock.py tests/registry/test_concurrent_register.py \
		tests/orchestration/test_flow_killed.py \
		tests/test_tracking.py::test_a_new_run_closes_the_runs_a_killed_process_left_running

ablation: $(STAMP)  ## encoder-start ablation (6 starts + 2 controls x 3 seeds, 64 eval images per dataset) through the Prefect flow -> docs/results.md "Ablation"
	@$(FOLLOW_UI); \
	$(BABELRS) ablation run

ablation-recipe: $(STAMP)  ## the pretraining-recipe study (256 px, unfrozen LM vs ours; reuses make ablation's ours runs) -> docs/results.md
	@$(FOLLOW_UI); \
	$(BABELRS) ablation run --study recipe

champion-figure: $(STAMP)  ## after `make run`: the champion's detections on held-out images -> docs/img
	$(PY) -m babelrs_core.registry.figure samples outputs/predict/samples
	for m in sar rgb ir; do $(BABELRS) predict outputs/predict/samples/$$m.png --modality $$m \
		--model models:/babelrs-detector@champion --out outputs/predict/$$m --overlays > /dev/null \
		|| exit 1; done
	$(PY) -m babelrs_core.registry.figure mosaic outputs/predict docs/img/champion_detections.png

preview: $(STAMP)  ## regenerate the README's preview mosaic
	$(BABELRS) data preview

ui: $(STAMP)  ## MLflow UI on the local store + a persistent Prefect server, both on 127.0.0.1 (Ctrl-C stops)
	bash infra/local/ui.sh

serve-scheduler: $(STAMP)  ## local Prefect server + work pool + gpu limit + weekly deployment + worker (Ctrl-C stops)
	bash infra/local/serve_scheduler.sh

gpu-check:  ## on a CUDA machine: CUDA, AMP and throughput of the training stages (< 8 min)
	bash bench/gpu_check.sh

lock: $(STAMP)  ## re-resolve requirements/base.in into requirements/lock.txt
	bash infra/local/lock.sh

clean:  ## remove generated data and caches (keeps .venv and the mmcv wheelhouse)
	rm -rf data/raw data/manifest outputs .pytest_cache .ruff_cache
