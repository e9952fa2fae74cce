# Two entry points: `make quickstart` (the main job) and `make test` (the suite). Both install first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MTDNN := $(VENV)/bin/mtdnn
export GLUE_DIR ?= $(abspath ../shared/data/glue)
export HF_HOME ?= $(abspath .cache/huggingface)

.PHONY: install test quickstart resume-demo pretrain pipeline pipeline-quick ablation clean bench reproduce transfer rehearsal

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

install: $(VENV)/.installed

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

quickstart: install
	$(MTDNN) train configs/quickstart.yaml --overwrite
	$(MTDNN) evaluate runs/quickstart/best
	$(MTDNN) predict runs/quickstart/best --split test --output-dir runs/quickstart/predictions

# Issue 5's real-data demonstration: SIGKILL a quickstart run mid-epoch, resume it, compare with runs/quickstart.
resume-demo: install
	HF_HUB_OFFLINE=1 $(PY) -m scripts.kill_and_resume configs/quickstart.yaml --reference runs/quickstart \
		--output-dir runs/kill-and-resume

# Stage 1 (continued MLM of MiniLM on GLUE sentences, minutes), and stages 2 + 3 with the dev table.
pretrain: install
	HF_HUB_OFFLINE=1 $(MTDNN) pretrain configs/pretrain_mlm.yaml --overwrite

pipeline: install
	HF_HUB_OFFLINE=1 $(PY) -m scripts.pipeline --config configs/pipeline.yaml

pipeline-quick: install
	HF_HUB_OFFLINE=1 $(PY) -m scripts.pipeline --config configs/pipeline.yaml --quick

# The multi-task toolbox, each mechanism on vs off (issue 7): 12 arms x seeds 1,2,3, hours on a CPU (docs/results.md
# gives the run's time), resumable. ARGS=--seeds=1 or ARGS=--arms=baseline,san for less; ARGS=--quick: a few minutes.
ablation: install
	HF_HUB_OFFLINE=1 $(PY) -m scripts.ablation $(ARGS)

# Speed against transformers.Trainer (issue 4; its time and figures: docs/performance.md). `make bench ARGS=--quick`: shorter.
bench: install
	HF_HUB_OFFLINE=1 $(PY) -m scripts.benchmark $(ARGS)

# Single-task vs MT-DNN on GLUE dev with its controls (issues 6, 20; docs/results.md): a budget probe, then arm 1,
# the equal-passes control, arms 2 and 3 x 3 seeds with bootstrap intervals: hours on 2 idle cores (the report gives
# the job time), resumable (re-run to continue). ARGS=--accept-budget=N when no budget passes the probe;
# ARGS=--estimate: the tokens and time it takes; ARGS=--quick: a few minutes.
reproduce: install
	HF_HUB_OFFLINE=1 $(PY) -m scripts.reproduce $(ARGS)

# Held-out task (RTE; ARGS=--held-out=mrpc) from 0.1-100% of its data, MT-DNN vs pre-trained encoder
# (issue 8; docs/results.md gives the run's time): resumable. ARGS=--quick: a few minutes.
transfer: install
	HF_HUB_OFFLINE=1 $(PY) -m scripts.transfer $(ARGS)

# The paper's config on synthetic GLUE of the real sizes (issue 17; docs/performance.md): cold tokenisation, training,
# 2 processes, every dev set and a complete submission. ARGS=--encoder=bert-base for a BERT-base-sized encoder.
rehearsal: install
	HF_HUB_OFFLINE=1 $(PY) -m scripts.rehearsal --report docs/performance.md $(ARGS)

clean:
	rm -rf runs .cache
