# Two commands do everything on a fresh machine with Python 3.11:
#   make run   set up .venv from constraints.txt, then run the pipeline locally on the bundled sample
#   make test  set up, lint, and run the tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAMPLE := data/sample/transactions.csv.gz
OUTPUT ?= output

.PHONY: setup run test lint bench mutation definition clean image \
	build-TriggerFunction build-ApprovalFunction build-ExportFunction

$(STAMP): constraints.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/rfm run-local --input $(SAMPLE) --output $(OUTPUT) --param ModelApprovalStatus=Approved

test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .

definition: setup
	$(BIN)/get-pipeline-definition --module-name pipeline.definition --file-name pipeline-definition.json \
	  --kwargs '{"region": "us-east-1", "role": "arn:aws:iam::123456789012:role/rfm-pipeline", "default_bucket": "my-bucket"}'

bench: setup
	$(BIN)/python benchmarks/run_all.py
	RFM_EXPORT_SCALE_CUSTOMERS=1000000 $(BIN)/pytest -q -s -p no:cacheprovider tests/test_export_scale.py

# Mutation testing of the core rules (docs/testing.md): not part of `make test` (tens of minutes).
# MUTANTS narrows the run, e.g. make mutation MUTANTS='steps.features.scoring.*'.
MUTATION_STAMP := $(VENV)/.installed-mutation
MUTANTS ?= steps.features.scoring.* \
	steps.model.segmenter.xǁSegmenterǁ_order_clusters__mutmut_* steps.model.segmenter.xǁSegmenterǁ_choose_k__mutmut_* \
	steps.model.serve.x_validate__mutmut_* steps.model.serve.x__floats__mutmut_* steps.model.serve.x__not_a_number__mutmut_* \
	lambdas.trigger.app.x_ignore_reason__mutmut_* lambdas.trigger.app.x_client_request_token__mutmut_* \
	lambdas.approval.app.x_ignore_reason__mutmut_* lambdas.approval.app.x__create_model__mutmut_* \
	lambdas.approval.app.x_model_name_for__mutmut_*

$(MUTATION_STAMP): $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test,mutation]"
	touch $(MUTATION_STAMP)

mutation: $(MUTATION_STAMP)
	$(BIN)/mutmut run --max-children $(or $(MUTATION_JOBS),2) $(MUTANTS)
	$(BIN)/python -m tests.mutation_summary $(MUTANTS)

image:
	docker build -f containers/Dockerfile -t rfm-segmentation:$(or $(IMAGE_TAG),latest) .

# `sam build` (template.yaml: BuildMethod makefile) calls build-<LogicalId> with ARTIFACTS_DIR set. Each Lambda
# zip holds the lambdas/<name>/ and steps/ packages plus lambdas/<name>/requirements.txt, pinned by
# constraints.txt and fetched as manylinux wheels for the python3.11 x86_64 runtime (no compiler needed).
LAMBDA_PIP = $(PYTHON) -m pip install --quiet --disable-pip-version-check --no-compile --upgrade \
	--platform manylinux2014_x86_64 --implementation cp --python-version 3.11 --only-binary=:all: \
	-c constraints.txt --target "$(ARTIFACTS_DIR)"

define lambda_package
	$(LAMBDA_PIP) -r lambdas/$(1)/requirements.txt
	mkdir -p "$(ARTIFACTS_DIR)/lambdas"
	cp lambdas/__init__.py "$(ARTIFACTS_DIR)/lambdas/"
	cp -R lambdas/$(1) "$(ARTIFACTS_DIR)/lambdas/"
	cp -R steps "$(ARTIFACTS_DIR)/"
	find "$(ARTIFACTS_DIR)/lambdas" "$(ARTIFACTS_DIR)/steps" -name __pycache__ -prune -exec rm -rf {} +
endef

build-TriggerFunction:
	$(call lambda_package,trigger)

build-ApprovalFunction:
	$(call lambda_package,approval)

build-ExportFunction:
	$(call lambda_package,export)

clean:
	rm -rf $(OUTPUT) .pytest_cache .ruff_cache build *.egg-info .aws-sam mutants
