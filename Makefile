# Set-up and the two commands of the README. Everything lives in .venv; torch is pinned
# to 2.13.0 first so that pip takes the CPU build where one is available locally.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)  ## the main job: fit, compare with KDE and GMM, write a PNG of samples
	$(BIN)/python examples/quickstart.py --output-dir outputs

test: $(STAMP)  ## the test suite (unit, property, scikit-learn checks, doctests)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) outputs docs/_build
