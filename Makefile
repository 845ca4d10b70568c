# The two quickstart commands (README): `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.rlir-installed

.PHONY: demo test venv bench embedded clean

# Create or update the local virtualenv. torch is installed first with the pin from
# constraints.txt so that CPU machines get the CPU build (docs: ../README.md#dependencies).
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch
	$(PIP) install -q -c constraints.txt -e ".[all,test]"
	touch $(STAMP)

venv: $(STAMP)

## Main job on the embedded default: evaluate the bundled Crafter world model on crafter-af-v1.
demo: $(STAMP)
	$(VENV)/bin/rlir demo

## Whole test suite (2 workers: the CI machine has 2 cores).
test: $(STAMP)
	$(PY) -m pytest -n 2 -q

## Rebuild every bundled file of the embedded world from seeds (CPU, about an hour; see worldmodels/bundled/MODEL_CARD.md).
embedded: $(STAMP)
	scripts/build_embedded.sh

bench: $(STAMP)
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
