# Two commands a new user needs (see README.md):
#   make course   - set up, then execute every notebook headless (CPU profile) into build/
#   make test     - set up, then run the unit tests, every notebook in the tiny `ci` profile and
#                   the dry run of the `gpu` profile (make dry-run)
PYTHON  ?= python3
VENV    ?= .venv
TORCH   ?= torch==2.13.0
# TORCH_INDEX=https://download.pytorch.org/whl/cpu: a CPU-only torch on Linux (no CUDA download)
TORCH_INDEX ?=
# The exact versions CI used (pip freeze, on CI's Python); pyproject.toml keeps the ranges that work.
# CONSTRAINTS= (empty) installs from those ranges alone, e.g. on a Python the pins do not support.
CONSTRAINTS ?= constraints.txt
PROFILE ?= cpu
BIN      = $(VENV)/bin
STAMP    = $(VENV)/.installed
NOTEBOOKS = $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

.PHONY: setup course test unit unit-then-notebooks-ci notebooks-ci dry-run colab-check lab freeze clean student

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)" $(if $(strip $(TORCH_INDEX)),--index-url $(strip $(TORCH_INDEX)))
	$(BIN)/python -m pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

# Execute every notebook in order, printing each one's seconds; executed copies go to build/notebooks,
# HTML to build/html with a landing page (index.html), timings to build/timings.json.
# No progress bars there (TQDM_DISABLE): nobody watches a headless kernel, and the pages stay clean.
course: $(STAMP)
	mkdir -p build/notebooks build/html
	COURSE_PROFILE=$(PROFILE) TQDM_DISABLE=1 $(BIN)/python tools/course_report.py --build build \
	    --mathjax-url "$$($(BIN)/python tools/offline_mathjax.py build/html/mathjax)" $(NOTEBOOKS)
	@echo "Open build/html/index.html in a browser; numbers recorded by the notebooks are in results/$(PROFILE)/."

# Two jobs side by side (each keeps about one core busy): the unit tests then the ci-profile notebooks,
# and the learner's gpu dry run. The passes share no cache entry (other profiles, other keys); each
# job's output is printed whole when it ends.
test: $(STAMP)
	$(MAKE) --no-print-directory -j2 --output-sync=target unit-then-notebooks-ci dry-run

unit: $(STAMP)
	COURSE_PROFILE=ci TQDM_DISABLE=1 MPLBACKEND=agg $(BIN)/python -m pytest -q tests

unit-then-notebooks-ci: unit
	$(MAKE) --no-print-directory notebooks-ci

notebooks-ci: $(STAMP)
	COURSE_PROFILE=ci TQDM_DISABLE=1 MPLBACKEND=agg $(BIN)/python -m pytest -q --nbval-lax notebooks

# The gpu profile's code paths on a CPU (COURSE_DRY_RUN, helpers/profile.py): every notebook at window
# 200 and width 128 on ml-100k, the ML-1M stand-in and Beauty, cut to 40 users and one epoch. Numbers
# go to results/gpu-dry-run/, never results/gpu/. DRY_RUN=amp also trains under bf16 autocast (4x slower).
# It runs the learner's edition (build/student, `make student`), so `make test` runs both editions top
# to bottom: the solutions in the ci profile, the learner's (checks say "not done yet") in the dry run.
# DRY_RUN_NOTEBOOKS=notebooks dry-runs the solution edition instead.
DRY_RUN ?= 1
DRY_RUN_NOTEBOOKS ?= build/student
dry-run: $(STAMP) student
	COURSE_PROFILE=gpu COURSE_DRY_RUN=$(DRY_RUN) TQDM_DISABLE=1 MPLBACKEND=agg $(BIN)/python -m pytest -q \
	    -p no:cacheprovider --nbval-lax $(DRY_RUN_NOTEBOOKS)

# Colab months from now: a fresh venv without constraints.txt, the course installed as Colab's cell does
# (not editable) on the newest releases the ranges in pyproject.toml allow, then notebooks 01-03 in the
# ci profile. torch stays $(TORCH): a newer torch from PyPI is a multi-GB CUDA build (Colab brings its
# own); with TORCH_INDEX=https://download.pytorch.org/whl/cpu and TORCH=torch the newest CPU build.
# The versions it used: build/colab-check/freeze.txt. Run it before each workshop (docs/workshop.md).
COLAB_VENV ?= /tmp/colab-check-venv
COLAB_NOTEBOOKS = $(wordlist 1,3,$(NOTEBOOKS))
colab-check:
	rm -rf $(COLAB_VENV) build/colab-check
	mkdir -p build/colab-check
	$(PYTHON) -m venv $(COLAB_VENV)
	$(COLAB_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(COLAB_VENV)/bin/python -m pip install --quiet "$(TORCH)" $(if $(strip $(TORCH_INDEX)),--index-url $(strip $(TORCH_INDEX)))
	$(COLAB_VENV)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager ".[test]" "$(TORCH)" \
	    $(if $(strip $(TORCH_INDEX)),--extra-index-url $(strip $(TORCH_INDEX)))
	$(COLAB_VENV)/bin/python -m pip freeze > build/colab-check/freeze.txt
	COURSE_PROFILE=ci TQDM_DISABLE=1 MPLBACKEND=agg COURSE_RESULTS_DIR=$(CURDIR)/build/colab-check/results \
	    COURSE_CACHE_DIR=$(CURDIR)/build/colab-check/cache $(COLAB_VENV)/bin/python -m pytest -q -p no:cacheprovider \
	    --nbval-lax $(COLAB_NOTEBOOKS)

# The learner's edition: every notebook without its solutions (checked exercises stubbed, open
# experiments' solutions removed), written to build/student/. Standard library only: no .venv needed.
student:
	$(PYTHON) tools/make_student.py --out build/student $(NOTEBOOKS)

# Jupyter refuses to start as root (Docker, WSL, cloud VMs) unless told to.
USER_ID ?= $(shell id -u)
lab: $(STAMP)
	$(BIN)/python -m pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) "jupyterlab>=4"
	$(BIN)/jupyter lab $(if $(filter 0,$(USER_ID)),--allow-root) notebooks

# Rewrite constraints.txt from a working .venv (after changing pyproject.toml, once `make test` passes).
# A local version (torch 2.13.0+cpu) is written without its label: ==2.13.0 admits the CPU and CUDA builds.
freeze: $(STAMP)
	echo "# pip freeze of the .venv that passed \`make test\` on Python $$($(BIN)/python -c 'import platform; print(platform.python_version())') (\`make freeze\` rewrites it); used with pip -c" > $(CONSTRAINTS)
	$(BIN)/python -m pip freeze --exclude-editable | sed -E 's/^([^=]+==[^+]+)\+.*/\1/' >> $(CONSTRAINTS)

clean:
	rm -rf build results $(VENV)
