"""Print AWS's SageMaker Spark processing image that containers/Dockerfile.spark is built FROM, for a region.

The SageMaker SDK's lookup (``image_uri_config/spark.json``) at the Spark and Python versions the
project pins (pipeline/spark_image.py): the same account per region the SDK would use. buildspec.yml
logs in to that registry and passes it to the build as ``SPARK_REGISTRY``.

    python containers/spark_base_image.py us-east-1
        ->  173754725891.dkr.ecr.us-east-1.amazonaws.com/sagemaker-spark-processing:3.5-cpu-py312
    python containers/spark_base_image.py us-east-1 --registry
        ->  173754725891.dkr.ecr.us-east-1.amazonaws.com
"""

from __future__ import annotations

import argparse
import sys

from steps.errors import PipelineError


def base_image(region: str) -> str:
    """The AWS Spark processing image of ``region``; one-line error for a region the SDK does not list."""
    from pipeline.spark_image import spark_base_image_uri

    try:
        return spark_base_image_uri(region)
    except ValueError as error:  # the SDK's message lists every region: too long for one line
        raise PipelineError(f"no SageMaker Spark processing image for region {region!r}", "AWS_REGION",
                            "use a region the SageMaker SDK's image_uri_config/spark.json lists") from error


def main(argv: list[str] | None = None) -> int:
    """Print the image (or, with ``--registry``, its registry); 1 with one line on stderr when unknown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("region")
    parser.add_argument("--registry", action="store_true", help="print only ACCOUNT.dkr.ecr.REGION.amazonaws.com")
    args = parser.parse_args(argv)
    try:
        image = base_image(args.region)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(image.split("/", 1)[0] if args.registry else image)
    return 0


if __name__ == "__main__":
    sys.exit(main())
