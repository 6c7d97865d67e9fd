# One virtual environment outside the clone, reused between runs (pip's cache and the ES zip too).
VENV ?= $(HOME)/.cache/ralm-es/venv
PY := $(VENV)/bin/python
QUICK ?= 0

.PHONY: install test lint demo bench clean-node

$(PY):
	python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

# Editable install of this clone; quick when the requirements are already satisfied.
install: | $(PY)
	$(PY) -m pip install -q -e '.[model,serve,dev]'

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: install lint
	$(VENV)/bin/pytest -q

demo: install
	bash scripts/demo.sh

bench: install
	$(PY) -m bench.run $(if $(filter 1,$(QUICK)),--quick,)
