# prunebench — every target installs what it needs first.
#   make reproduce-lamp [PROFILE=full|ci] [DOWNLOAD=1] [ARGS="--ray-address auto ..."]
#   make report-lamp    [PROFILE=...]
#   make test | make ui | make bench
#   make smoke [PAPERS="lamp dpf"]      every cell of every full profile a few steps each (synthetic files, CPU)
#   make gpu-check                      GPU readiness: fast path, streaming, Ray GPU shares, one cell per paper
#   make test-lab                       lab-scale tests (Ray cluster, MLflow on PostgreSQL, faults, load)
#   make tracking-server [PG_PORT=5433 MLFLOW_PORT=5001 TRACKING_DIR=.tracking] | make tracking-server-stop
PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PROFILE ?= full
ARGS    ?=
RUN_ARGS := $(if $(DOWNLOAD),--download,) $(ARGS)
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
PAPERS  := $(basename $(notdir $(wildcard paper_configs/*.yaml)))

.PHONY: install system-deps test test-lab smoke gpu-check tracking-server tracking-server-stop validate plan ui bench clean $(addprefix reproduce-,$(PAPERS)) $(addprefix report-,$(PAPERS))

install: $(VENV)/.installed system-deps

$(VENV)/.installed: pyproject.toml examples/prunebench-taylor/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,lab]'
	$(BIN)/pip install -q --no-deps -e examples/prunebench-taylor   # the worked plugin example (tests use it)
	touch $@

# Offline data for tests and `ci` profiles: real Fashion-MNIST from Debian (30 MB, no download at run
# time); Debian's chromium for the MLflow UI browser test; Debian's PostgreSQL (and curl) for the
# tracking server (`make tracking-server`) and the lab tests.
system-deps:
	@missing=""; [ -f $(FASHION_MNIST) ] || missing="dataset-fashion-mnist"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing; \
	fi

test: install
	$(BIN)/python -m pytest

# Lab scale (marker `lab`, never part of `make test`): concurrent drivers, a two-node Ray cluster with
# token authentication, MLflow on PostgreSQL, worker/server/database faults, a 400-trial load grid.
test-lab: install
	$(BIN)/python -m pytest -m lab --durations=0

# An MLflow tracking server on PostgreSQL (Debian's) with a local artifact store, on 127.0.0.1:
# then `prunebench run ... --tracking-uri http://127.0.0.1:$${MLFLOW_PORT:-5001}`.
tracking-server: install
	scripts/tracking-server.sh start

tracking-server-stop:
	scripts/tracking-server.sh stop

$(addprefix reproduce-,$(PAPERS)): reproduce-%: install
	$(BIN)/prunebench run paper_configs/$*.yaml --profile $(PROFILE) $(RUN_ARGS)

$(addprefix report-,$(PAPERS)): report-%: install
	$(BIN)/prunebench report paper_configs/$*.yaml --profile $(PROFILE)

validate: install
	@for f in paper_configs/*.yaml; do $(BIN)/prunebench validate $$f && $(BIN)/prunebench validate $$f --profile ci || exit 1; done

plan: install
	@for f in paper_configs/*.yaml; do $(BIN)/prunebench plan $$f --profile $(PROFILE); done

ui: install
	$(BIN)/prunebench ui

bench: install
	$(BIN)/python benchmarks/bench_train.py --record $(ARGS)
	$(BIN)/python benchmarks/bench_fast_path.py --record
	$(BIN)/python benchmarks/bench_packing.py --record
	$(BIN)/python benchmarks/bench_dpf.py
	$(BIN)/python benchmarks/bench_reference_loop.py
	$(BIN)/python benchmarks/bench_overhead.py
	$(BIN)/python benchmarks/bench_stream.py

smoke: install
	@rc=0; for p in $(PAPERS); do $(BIN)/prunebench run paper_configs/$$p.yaml --smoke $(ARGS) || rc=1; done; exit $$rc

gpu-check: install
	$(BIN)/python scripts/gpu_check.py $(ARGS)

clean:
	rm -rf runs ray_results mlflow.db mlartifacts

# Mutation testing with mutmut 3 (not part of `make test`; config in pyproject.toml [tool.mutmut]).
#   make mutate                                       all configured files
#   make mutate MUTANTS='harness.pruning.schedules.*' only the mutants matching a name glob
#   make mutate MUTATE_JOBS=2 FRESH=1                 parallel workers; FRESH=1 deletes ./mutants/ first
# Results are kept in ./mutants/ (git-ignored) and reused by the next run; `$(BIN)/mutmut browse` explores them.
# mutmut never re-copies an unmutated file that is already in ./mutants/: after moving or editing other
# harness/ files (e.g. the config/report refactor) run with FRESH=1, or the tests see the old copies.
# (uses the existing venv as is, runs `make install` only when there is none)
MUTANTS     ?=
MUTATE_JOBS ?= 1
.PHONY: mutate
mutate:
	@test -x $(BIN)/python || $(MAKE) install
	@$(BIN)/python -c 'import mutmut' 2>/dev/null || $(BIN)/pip install -q 'mutmut>=3.8,<4'
	$(if $(FRESH),rm -rf mutants,)
	$(BIN)/mutmut run --max-children $(MUTATE_JOBS) $(foreach m,$(MUTANTS),'$(m)')
	@$(BIN)/mutmut export-cicd-stats >/dev/null
	@echo "== mutation summary (all configured files; 'total' includes mutants not run yet) =="
	@cat mutants/mutmut-cicd-stats.json; echo
	@echo "== mutants run but not killed (see one with: $(BIN)/mutmut show NAME) =="
	@$(BIN)/mutmut results | grep -v ': not checked$$' || true
