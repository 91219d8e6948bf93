# Two commands do everything on a fresh machine with Python 3.11:
#   make run   set up .venv from constraints.txt, then run the pipeline locally on the bundled sample
#   make test  set up, lint, and run the tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAMPLE := data/sample/transactions.csv.gz
OUTPUT ?= output

CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

.PHONY: setup run test lint explore bench mutation definition clean image image-spark \
	build-TriggerFunction build-ApprovalFunction build-ExportFunction build-PandasLayer

$(STAMP): constraints.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test,spark]"
	touch $(STAMP)

# checkov (tests/test_deploy.py) pins its own boto3, which clashes with the lock file's: it gets a
# virtualenv of its own, pinned by containers/checkov-requirements.txt.
$(CHECKOV_STAMP): containers/checkov-requirements.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r containers/checkov-requirements.txt
	touch $(CHECKOV_STAMP)

setup: $(STAMP) $(CHECKOV_STAMP)

run: $(STAMP)
	$(BIN)/rfm run-local --input $(SAMPLE) --output $(OUTPUT) --param ModelApprovalStatus=Approved

# Two pytest-xdist workers (whole files each; tests/conftest.py); PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= 2
test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS))

lint: setup
	$(BIN)/ruff check .

# The property tests draw the same examples on every `make test` (tests/conftest.py); this draws new
# random ones, EXPLORE_RUNS times over. A failure prints the example and a @reproduce_failure blob.
EXPLORE_RUNS ?= 3
PROPERTY_TESTS := tests/test_scoring.py tests/test_features.py tests/test_history.py tests/test_spark.py
explore: setup
	for run in $$(seq $(EXPLORE_RUNS)); do \
	  HYPOTHESIS_PROFILE=explore $(BIN)/pytest -q -p no:cacheprovider -n 2 $(PROPERTY_TESTS) || exit 1; done

# An example definition (get_pipeline has no default image: the build records the one it pushed in SSM).
EXAMPLE_IMAGE := 123456789012.dkr.ecr.us-east-1.amazonaws.com/rfm-segmentation:src-0000000000000000
definition: setup
	$(BIN)/get-pipeline-definition --module-name pipeline.definition --file-name pipeline-definition.json \
	  --kwargs '{"region": "us-east-1", "role": "arn:aws:iam::123456789012:role/rfm-pipeline", "default_bucket": "my-bucket", "image_uri": "$(EXAMPLE_IMAGE)"}'

bench: setup
	$(BIN)/python benchmarks/run_all.py
	RFM_EXPORT_SCALE_CUSTOMERS=1000000 $(BIN)/pytest -q -s -p no:cacheprovider tests/test_export_scale.py
	RFM_K_STABILITY_CUSTOMERS=150000 $(BIN)/pytest -q -p no:cacheprovider \
	  tests/test_segmenter.py::test_k_does_not_change_with_the_seed_above_the_selection_sample

# Mutation testing of the core rules (docs/testing.md): not part of `make test` (tens of minutes).
# MUTANTS narrows the run, e.g. make mutation MUTANTS='steps.features.scoring.*'.
MUTATION_STAMP := $(VENV)/.installed-mutation
MUTANTS ?= steps.features.scoring.* \
	steps.model.segmenter.xǁSegmenterǁ_order_clusters__mutmut_* steps.model.segmenter.xǁSegmenterǁ_choose_k__mutmut_* \
	steps.model.serve.x_validate__mutmut_* steps.model.serve.x__floats__mutmut_* steps.model.serve.x__not_a_number__mutmut_* \
	lambdas.trigger.app.x_ignore_reason__mutmut_* lambdas.trigger.app.x_parse_event__mutmut_* \
	lambdas.trigger.app.xǁPipelineStarterǁ__init____mutmut_* \
	lambdas.approval.app.x_ignore_reason__mutmut_* lambdas.approval.app.x__create_model__mutmut_* \
	lambdas.approval.app.x_model_name_for__mutmut_* \
	steps.features.quality.* steps.features.aggregate.x_aggregate_customers__mutmut_* \
	steps.features.aggregate.x_find_repeated_keys__mutmut_* steps.features.aggregate.x_correct_identical_rows__mutmut_* \
	steps.features.transactions.x_has_id_sql__mutmut_* steps.features.state.*

$(MUTATION_STAMP): $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test,spark,mutation]"
	touch $(MUTATION_STAMP)

mutation: $(MUTATION_STAMP)
	$(BIN)/mutmut run --max-children $(or $(MUTATION_JOBS),2) $(MUTANTS)
	$(BIN)/python -m tests.mutation_summary $(MUTANTS)

# Tagged with the hash of what the image is built from (containers/source_hash.py), as buildspec.yml does.
image:
	docker build -f containers/Dockerfile -t rfm-segmentation:$(or $(IMAGE_TAG),src-$(shell $(PYTHON) containers/source_hash.py)) .

# The Spark ComputeRFM step's image, FROM AWS's Spark processing image of REGION (log in to that registry
# first: docs/deploy.md, "ComputeRFM on Spark").
REGION ?= us-east-1
image-spark: $(STAMP)
	docker build -f containers/Dockerfile.spark \
	  --build-arg SPARK_REGISTRY=$$($(BIN)/python containers/spark_base_image.py $(REGION) --registry) \
	  -t rfm-segmentation:spark-src-$(shell $(PYTHON) containers/source_hash.py --dockerfile containers/Dockerfile.spark) .

# `sam build` (template.yaml: BuildMethod makefile) calls build-<LogicalId> with ARTIFACTS_DIR set. Each Lambda
# zip holds the lambdas/<name>/ and steps/ packages plus lambdas/<name>/requirements.txt, pinned by
# constraints.txt and fetched as manylinux wheels for the Lambda runtime (no compiler needed). The runtime is
# python3.12 (Amazon Linux 2023, glibc 2.34): the lock file's pyarrow and numpy ship manylinux_2_28 wheels
# only, which python3.11's Amazon Linux 2 (glibc 2.26) cannot load.
LAMBDA_PYTHON := 3.12
LAMBDA_WHEELS = $(PYTHON) -m pip install --quiet --disable-pip-version-check --no-compile --upgrade \
	--platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --implementation cp \
	--python-version $(LAMBDA_PYTHON) --only-binary=:all: -c constraints.txt
LAMBDA_PIP = $(LAMBDA_WHEELS) --target "$(ARTIFACTS_DIR)"

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

# The export Lambda's pandas layer: the constraints.txt versions, without tests, headers, Cython sources
# and pyarrow's Flight and Substrait libraries (unused, and the layer must fit Lambda's 250 MB unzipped).
LAYER_PACKAGES := pandas pyarrow numpy
build-PandasLayer:
	$(LAMBDA_WHEELS) --target "$(ARTIFACTS_DIR)/python" $(LAYER_PACKAGES)
	cd "$(ARTIFACTS_DIR)/python" && rm -rf pandas/tests pyarrow/tests pyarrow/include numpy/*/tests numpy/_core/tests \
	  pyarrow/libarrow_flight.* pyarrow/_flight.* pyarrow/libarrow_substrait.* pyarrow/_substrait.* \
	  && find . \( -name '*.pxd' -o -name '*.pyx' -o -name '*.h' \) -delete

clean:
	rm -rf $(OUTPUT) .pytest_cache .ruff_cache build *.egg-info .aws-sam $(CHECKOV_VENV) mutants
