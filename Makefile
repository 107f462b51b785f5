# Two entry points for a fresh clone: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PROVIDERS := $(patsubst %/pyproject.toml,%,$(wildcard providers/*/pyproject.toml))
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt
MANIFEST ?= rotation.yaml

.PHONY: run test install dev lint typecheck security unit slow bench clean image

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "rotator needs Python >= 3.11 (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt $(wildcard providers/*/pyproject.toml)
	$(PIP_INSTALL) -e . $(addprefix -e ,$(PROVIDERS))
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[dev]'
	@touch $@

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

## run: the daemon on the embedded store with the sample manifest (Ctrl-C to stop)
run: install
	$(BIN)/rotator -f $(MANIFEST) daemon

## test: lint, type-check, bandit, then the whole suite (2 workers)
test: dev lint typecheck security unit

lint:
	$(BIN)/ruff check .

typecheck:
	$(BIN)/mypy rotator $(foreach p,$(PROVIDERS),$(p)/rotator_$(notdir $(p)))

## security: bandit over the shipped code; medium/high findings fail (skips explained in pyproject [tool.bandit])
security:
	$(BIN)/bandit -q -r rotator providers -c pyproject.toml -ll

## unit: the suite without the tests marked slow (those run in `make slow`, which .ci/run adds)
unit:
	$(BIN)/pytest -n 2 --dist loadgroup -q -m "not slow"

## slow: the long end-to-end tests (kill -9 trials, the container image build)
slow: dev
	$(BIN)/pytest -n 2 --dist loadgroup -q -m slow

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .rotator .pytest_cache .mypy_cache .ruff_cache wheelhouse

## image: the container image (deploy/Dockerfile) from a local wheelhouse; buildah if installed, else docker
IMAGE ?= localhost/rotator:dev
image: $(BIN)/python
	$(BIN)/python -m pip wheel --quiet --disable-pip-version-check --wheel-dir wheelhouse -c constraints.txt \
		setuptools wheel . $(PROVIDERS)
	if command -v buildah >/dev/null; then \
		STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot buildah bud --pull=never -f deploy/Dockerfile -t $(IMAGE) . ; \
	else docker build -f deploy/Dockerfile -t $(IMAGE) . ; fi
