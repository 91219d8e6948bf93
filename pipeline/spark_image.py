"""AWS's SageMaker Spark processing image, the base of the Spark ComputeRFM step's image.

No SageMaker SDK import at module level (``containers/spark_base_image.py`` runs in the build before
anything else needs the SDK): only the image table lookup, which reads the SDK's
``image_uri_config/spark.json`` and calls no AWS API.
"""

from __future__ import annotations

from pipeline.parameters import DEFAULT_INSTANCE_TYPE

# The image containers/Dockerfile.spark builds FROM; pyspark (constraints.txt) is pinned to its Spark 3.5.
SPARK_FRAMEWORK_VERSION = "3.5"
SPARK_PY_VERSION = "py312"


def spark_base_image_uri(region: str, instance_type: str = DEFAULT_INSTANCE_TYPE) -> str:
    """AWS's SageMaker Spark processing image (Spark 3.5, Python 3.12) of ``region``, from the SDK's lookup.

    The Spark step does not run on it as it is (it lacks the project's package): containers/Dockerfile.spark
    builds the step's image ``FROM`` it.

    Raises
    ------
    ValueError
        When the SDK lists no such image for ``region``.
    """
    from sagemaker.core import image_uris

    return image_uris.retrieve("spark", region, version=SPARK_FRAMEWORK_VERSION, py_version=SPARK_PY_VERSION,
                               instance_type=instance_type, image_scope="processing")
