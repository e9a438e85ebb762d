# The two commands of the README. Both create .venv when it is missing.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.pig-installed
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 TRANSFORMERS_OFFLINE=1

.PHONY: demo test venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

# The main job on the embedded default: synthetic benchmark, stage 1 + stage 2, evaluation, outputs/.
demo: $(STAMP)
	$(VENV)/bin/accelerate launch training/train.py

# The test suite, offline.
test: $(STAMP)
	$(OFFLINE) $(PY) -m pytest -q -n 2 --dist loadfile tests

clean:
	rm -rf outputs .pytest_cache
