# prunebench — every target installs what it needs first.
#   make reproduce-lamp [PROFILE=full|ci] [DOWNLOAD=1] [ARGS="--ray-address auto ..."]
#   make report-lamp    [PROFILE=...]
#   make test | make ui | make bench
PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PROFILE ?= full
ARGS    ?=
RUN_ARGS := $(if $(DOWNLOAD),--download,) $(ARGS)
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
PAPERS  := $(basename $(notdir $(wildcard paper_configs/*.yaml)))

.PHONY: install system-deps test validate plan ui bench clean $(addprefix reproduce-,$(PAPERS)) $(addprefix report-,$(PAPERS))

install: $(VENV)/.installed system-deps

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# Offline data for tests and `ci` profiles: real Fashion-MNIST from Debian (30 MB, no download at run time).
system-deps:
	@if [ ! -f $(FASHION_MNIST) ]; then \
	  echo "installing Debian package dataset-fashion-mnist"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	fi

test: install
	$(BIN)/python -m pytest

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
	$(BIN)/python benchmarks/bench_train.py $(ARGS)

clean:
	rm -rf runs ray_results mlflow.db mlartifacts
