# One-command entry points. Each target creates .venv when it is missing and installs what it needs.
#   make test   - install and run the test suite (PYTEST_WORKERS processes, default 2)
#   make demo   - install and run the whole method on the embedded synthetic benchmark
# TORCH_SPEC pins the PyTorch build; override it to use another (e.g. TORCH_SPEC="torch torchvision").
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
# Test worker processes (pytest-xdist), each module on one worker; 0 runs the suite in this process.
PYTEST_WORKERS ?= 2
VENV_PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo clean-demo

install: $(STAMP)

$(STAMP): requirements.txt requirements-test.txt pyproject.toml
	@test -x $(VENV_PY) || $(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install --quiet --upgrade pip
	$(VENV_PY) -m pip install --quiet $(TORCH_SPEC)
	$(VENV_PY) -m pip install --quiet -r requirements.txt -r requirements-test.txt
	$(VENV_PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

test: $(STAMP)
	$(VENV_PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV_PY) demo.py

clean-demo:
	rm -rf demo_out
