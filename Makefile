# iqalib workbook. Every target bootstraps the environment it needs.
#   make reproduce            run every notebook headless (PROFILE=quick by default, JOBS at a time)
#   make test                 the test suite, notebooks included (smoke profile), on TEST_JOBS workers
#   make test-extended        the checks too slow for make test
#   make lab                  JupyterLab on copies of the notebooks (build/lab/)
#   make check-lab            notebook 10 live in JupyterLab, driven by headless Chromium
#   make weights [WEIGHTS=..] download the pretrained checkpoints (needs the internet)
#   make data                 fetch the NIPS 2017 development set (needs the internet)
#   make rehearse             the online path rehearsed offline (local mirror, stand-in weights)
#   make bench                speed goals as ratios in one run (PROFILE=paper: + projection of the paper run)
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
PROFILE     ?= quick
BUILD       := build/$(PROFILE)
STAMP       := $(VENV)/.iqalib-installed
WEIGHTS     ?= all
PYTEST_ARGS ?=
TEST_JOBS   ?= 2

NOTEBOOKS   := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
EXECUTED    := $(patsubst notebooks/%,$(BUILD)/%,$(NOTEBOOKS))

.PHONY: help env reproduce notebooks test test-extended lab check-lab weights data bench samples clean lint strip-check rehearse

help:
	@sed -n '2,10p' Makefile

# --- environment -----------------------------------------------------------
env: $(STAMP)

$(STAMP): pyproject.toml requirements-nodeps.txt
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip wheel
	# torch first, pinned: a bare "torch" would pull a newer multi-GB CUDA build
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	@touch $@

samples: $(STAMP)
	$(PY) -m iqalib samples

# --- the workbook ----------------------------------------------------------
# JOBS notebooks at a time where the Makefile's dependency lines allow (default 1), each kernel
# on its share of the cores. On 2 cores JOBS=2 is no faster: the grid chain 03 -> 05 -> 07 -> 09
# is most of the work, and alone on one core it runs at half speed. On a GPU, two notebooks
# would split its memory.
JOBS        ?= 1
THREADS     := $(shell n=$$(nproc 2>/dev/null || echo 1); t=$$((n / $(JOBS))); echo $$((t > 0 ? t : 1)))

reproduce: $(STAMP)
	@$(MAKE) --no-print-directory -j$(JOBS) notebooks
	@echo "figures in figures/, tables in data/results/, executed notebooks in $(BUILD)/"

# The grid chain (03 -> 04, 05 -> 07 -> 09) is the critical path: make starts prerequisites in
# the order listed, so 03 and 05 come first and the independent notebooks fill the other slot.
FIRST       := $(filter $(BUILD)/03_% $(BUILD)/05_%,$(EXECUTED))
notebooks: $(FIRST) $(filter-out $(FIRST),$(EXECUTED))

# Notebooks run in number order: a later one may read an earlier one's results.
# What a notebook runs under a profile is defined in iqalib/study.py: a change there reruns it.
$(BUILD)/%.ipynb: notebooks/%.ipynb notebooks/params/$(PROFILE).yaml iqalib/study.py $(STAMP)
	@mkdir -p $(BUILD)
	OMP_NUM_THREADS=$(THREADS) $(PY) -m papermill --log-level WARNING -k python3 --cwd notebooks \
	    -f notebooks/params/$(PROFILE).yaml -p PROFILE $(PROFILE) $< $(@:.ipynb=.partial.ipynb) && mv $(@:.ipynb=.partial.ipynb) $@

# What reads what, as iqalib.study.NOTEBOOK_INPUTS says (so `make reproduce JOBS=2` keeps a
# valid order; tests/test_notebooks.py checks that the two agree):
# 04 and 05 purify the attacked images 03 cached; 07 and 08 read the grid runs of 03-06
# (iqalib.study.RESULT_RUNS); 09 attacks the best purifiers of 07's table.
GRID_RUNS := $(BUILD)/03_attacks.ipynb $(BUILD)/04_baseline_purifiers.ipynb \
             $(BUILD)/05_diffpure.ipynb $(BUILD)/06_fcn_filter.ipynb
$(BUILD)/04_baseline_purifiers.ipynb $(BUILD)/05_diffpure.ipynb: $(BUILD)/03_attacks.ipynb
$(BUILD)/07_results_tables.ipynb $(BUILD)/08_clean_images.ipynb: $(GRID_RUNS)
$(BUILD)/09_adaptive_attacks.ipynb: $(BUILD)/07_results_tables.ipynb
# 12 (mixed stream, detector) reads the grid runs as 07 does
$(BUILD)/12_attack_unknown.ipynb: $(GRID_RUNS)

# On copies in build/lab/ so that autosave never leaves outputs in the tracked notebooks;
# --allow-root is added under root (containers). LAB_ARGS go to `jupyter lab`.
lab: $(STAMP)
	$(PY) -m iqalib lab $(LAB_ARGS)

# The live check of notebook 10: JupyterLab on 127.0.0.1 driven by headless Chromium from
# Debian's chromium + chromium-driver (installed here when missing and run as root) and
# selenium (the `lab` extra). About 1-3 minutes on a 2-core CPU, so not part of `make test`.
check-lab: $(STAMP)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	  else echo "check-lab needs Chromium: sudo apt-get install -y chromium chromium-driver"; \
	    exit 1; fi; }
	@$(PY) -c "import selenium" 2>/dev/null || $(PY) -m pip install --quiet -e '.[lab]'
	IQALIB_CHECK_LAB=1 $(PY) -m pytest tests/lab -s -p no:cacheprovider $(PYTEST_ARGS)

# --- tests -----------------------------------------------------------------
# TEST_JOBS pytest-xdist workers (0: one process). A test module (or class) is one unit of
# work, so the notebooks' two chains (two classes in tests/test_notebooks.py) each run in number
# order on one worker; tests/conftest.py puts them first, the longest units, and
# --no-loadscope-reorder keeps that order. (xdist_group marks are not used: with pytest 9,
# pytest-xdist 3.8's loadgroup silently ignores them.)
test: $(STAMP)
	$(PY) -m pytest -m "not extended" -n $(TEST_JOBS) --dist loadscope --no-loadscope-reorder $(PYTEST_ARGS)

# checks too slow for every CI run (e.g. a paper-profile notebook on a NIPS'17 stand-in image)
test-extended: $(STAMP)
	$(PY) -m pytest -m extended $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check iqalib tests

strip-check: $(STAMP)
	$(PY) -m iqalib check-notebooks notebooks

# --- assets that need the internet -----------------------------------------
weights: $(STAMP)
	$(PY) -m iqalib weights fetch $(WEIGHTS)

data: $(STAMP)
	$(PY) -m iqalib data fetch nips17

# make weights, make data and every notebook (rehearsal profile) against a local server with
# stand-in checkpoints, in a temporary folder; REHEARSE_ARGS: e.g. --keep, --notebooks 00 03
rehearse: $(STAMP)
	$(PY) -m iqalib.rehearsal $(REHEARSE_ARGS)

# PROFILE=paper adds the projection of the paper run from timed components (about 15 min on 2 cores)
bench: $(STAMP)
	$(PY) -m iqalib bench $(if $(filter paper,$(PROFILE)),--project paper)

clean:
	rm -rf build figures/*.png figures/*.svg data/results/*.parquet data/results/*.csv
