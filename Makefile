# Two commands a new user needs (see README.md):
#   make course   - set up, then execute every notebook headless (CPU profile) into build/
#   make test     - set up, then run the unit tests and every notebook in the tiny `ci` profile
PYTHON  ?= python3
VENV    ?= .venv
TORCH   ?= torch==2.13.0
PROFILE ?= cpu
BIN      = $(VENV)/bin
STAMP    = $(VENV)/.installed
NOTEBOOKS = $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

.PHONY: setup course test lab clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

# Execute every notebook in order; executed copies go to build/notebooks, HTML to build/html.
course: $(STAMP)
	mkdir -p build/notebooks build/html
	COURSE_PROFILE=$(PROFILE) $(BIN)/jupyter nbconvert --to notebook --execute \
	    --ExecutePreprocessor.timeout=3600 --output-dir build/notebooks $(NOTEBOOKS)
	$(BIN)/jupyter nbconvert --to html --output-dir build/html build/notebooks/*.ipynb
	@echo "Open build/html/*.html in a browser; numbers recorded by the notebooks are in results/."

test: $(STAMP)
	COURSE_PROFILE=ci TQDM_DISABLE=1 MPLBACKEND=agg $(BIN)/python -m pytest -q tests
	COURSE_PROFILE=ci TQDM_DISABLE=1 MPLBACKEND=agg $(BIN)/python -m pytest -q --nbval-lax notebooks

lab: $(STAMP)
	$(BIN)/python -m pip install --quiet "jupyterlab>=4"
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf build results $(VENV)
