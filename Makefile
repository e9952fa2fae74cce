# Two entry points: `make quickstart` (the main job) and `make test` (the suite). Both install first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MTDNN := $(VENV)/bin/mtdnn
export GLUE_DIR ?= $(abspath ../shared/data/glue)
export HF_HOME ?= $(abspath .cache/huggingface)

.PHONY: install test quickstart clean

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

quickstart: install
	$(MTDNN) train configs/quickstart.yaml --overwrite
	$(MTDNN) evaluate runs/quickstart/best
	$(MTDNN) predict runs/quickstart/best --split test --output-dir runs/quickstart/predictions

clean:
	rm -rf runs .cache
