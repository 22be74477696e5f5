# Everything installs into .venv with plain pip; torch/torchvision are the locally cached wheels.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# MTCNN weights (the default face detector): only the state dicts in this wheel are used. Installed --no-deps
# because its metadata pins torch<2.3 and numpy<2; pip must never resolve those (it would fetch another torch).
MTCNN_WEIGHTS ?= facenet-pytorch==2.6.0
OUT ?= runs/demo
PYTEST_ARGS ?=

export RAY_AUTH_MODE := disabled
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup demo test test-fast bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps $(MTCNN_WEIGHTS)
	touch $@

demo: setup
	$(VENV)/bin/survsr demo --out $(OUT)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/ingest.py

clean:
	rm -rf runs .pytest_cache
