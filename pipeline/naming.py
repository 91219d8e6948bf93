"""Names shared by the pipeline definitions, the CLIs and the local runner (no SDK import)."""

MAIN_PIPELINE_NAME = "rfm-segmentation"
MODEL_PACKAGE_GROUP_NAME = "rfm-segmenter"
PUBLISH_PIPELINE_SUFFIX = "-publish"


def publish_pipeline_name(main_pipeline_name: str = MAIN_PIPELINE_NAME) -> str:
    """The publish pipeline's name: the main pipeline's + ``-publish``."""
    return main_pipeline_name + PUBLISH_PIPELINE_SUFFIX
