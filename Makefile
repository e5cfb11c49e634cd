# Set-up and the two commands of the README. Everything lives in .venv; torch is pinned
# to 2.13.0 first so that pip takes the CPU build where one is available locally.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs
SPHINXBUILD := $(BIN)/sphinx-build -W --keep-going -b html

.PHONY: demo test fuzz test-ray-train test-oldest-sklearn lint docs docs-noplot clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)  ## the main job: fit, compare with KDE and GMM, write a PNG of samples
	$(BIN)/python examples/quickstart.py --output-dir outputs

test: $(STAMP)  ## the test suite (unit, property, scikit-learn checks, doctests), on up to 4 cores
	$(BIN)/python -m pytest -n auto --maxprocesses 4

fuzz: $(STAMP)  ## fuzz tests: 2 000 random cases of the main property (make test runs ~300 fixed ones)
	HYPOTHESIS_PROFILE=fuzz OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests/test_fuzz.py \
		-o addopts="-p no:cacheprovider" -q --hypothesis-show-statistics

test-ray-train: $(STAMP)  ## data-parallel fit under Ray Train's TorchTrainer (minutes)
	SKEBFLOW_RAY_TRAIN=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests/test_ray_train.py -q

# The floor of pyproject.toml's scikit-learn requirement: keep the two in step.
OLDEST_SKLEARN := 1.6.0
OLDEST_DIR := build/scikit-learn-$(OLDEST_SKLEARN)

test-oldest-sklearn: $(STAMP)  ## weights, detector, imputer and scikit-learn's checks on the oldest scikit-learn allowed (minutes)
	$(BIN)/python -m pip install --quiet --no-deps --target $(OLDEST_DIR) "scikit-learn==$(OLDEST_SKLEARN)"
	PYTHONPATH=$(OLDEST_DIR) $(BIN)/python -m pytest -n auto --maxprocesses 4 -p no:cacheprovider -q \
		tests/test_sample_weight.py tests/test_outlier.py tests/test_langevin_impute.py \
		tests/test_estimator_checks.py

$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev,docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)  ## the documentation, every gallery example run: docs/_build/html
	$(SPHINXBUILD) docs docs/_build/html

docs-noplot: $(DOCS_STAMP)  ## the documentation without running the examples (CI)
	$(SPHINXBUILD) -D plot_gallery=0 docs docs/_build/html-noplot

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) outputs docs/_build docs/auto_examples docs/gen_modules \
		docs/generated docs/sg_execution_times.rst
