# One virtual environment outside the clone, reused between runs (pip's cache and the ES zip too).
VENV ?= $(HOME)/.cache/ralm-es/venv
PY := $(VENV)/bin/python
QUICK ?= 0

.PHONY: install hunspell test lint demo bench clean-node

$(PY):
	python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

# Editable install of this clone; quick when the requirements are already satisfied.
install: | $(PY)
	$(PY) -m pip install -q -e '.[model,serve,onnx,dev]'

# English stemming for the local node (it lacks analysis-common): Debian's hunspell-en-us, where apt can install it.
hunspell:
	@test -f /usr/share/hunspell/en_US.dic || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get install -y -q hunspell-en-us >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q hunspell-en-us >/dev/null; }; }; } || \
		echo "hunspell-en-us is not installed (needs root and apt): the local node indexes without stemming"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: install hunspell lint
	$(VENV)/bin/pytest -q

demo: install hunspell
	bash scripts/demo.sh

bench: install
	$(PY) -m bench.run $(if $(filter 1,$(QUICK)),--quick,)
