# Two commands do everything on a fresh machine with Python 3.11:
#   make run   set up .venv from constraints.txt, then run the pipeline locally on the bundled sample
#   make test  set up, lint, and run the tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAMPLE := data/sample/transactions.csv.gz
OUTPUT ?= output

.PHONY: setup run test lint bench definition clean

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

clean:
	rm -rf $(OUTPUT) .pytest_cache .ruff_cache build *.egg-info
