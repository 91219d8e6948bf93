"""Pipeline parameters: every value is checked in the parameter's own name before anything runs."""

from __future__ import annotations

import pytest

from pipeline.parameters import (
    CHECKS,
    DEFAULTS,
    ENCODINGS,
    HELP,
    INPUT_FORMATS,
    MAX_CLUSTERS,
    MIN_CLUSTERS,
    declared_parameters,
    parameter_values,
    parameters_help,
)
from steps.errors import ModelError, PipelineError

DECLARED = declared_parameters()


def test_defaults_pass_their_own_checks() -> None:
    values = parameter_values(DECLARED, {})
    assert values["NumClusters"] == 0 and values["Currency"] == "USD"


@pytest.mark.parametrize(("name", "value", "message"), [
    ("NumClusters", "1", "parameter NumClusters=1 is out of range: use 0 (choose automatically) or 2..50"),
    ("NumClusters", "51", "NumClusters=51 is out of range"),
    ("InputFormat", "csv", "parameter InputFormat='csv' is not one of auto, guidance"),
    ("AsOfDate", "2024-13-01", "parameter AsOfDate='2024-13-01' is not a date YYYY-MM-DD"),
    ("AsOfDate", "2024-1-5", "AsOfDate='2024-1-5' is not"),
    ("MinSilhouette", "2", "parameter MinSilhouette=2.0 is out of range: use -1..1"),
    ("MinClusterShare", "1.5", "MinClusterShare=1.5 is out of range"),
    ("RandomSeed", "-1", "RandomSeed=-1 is out of range"),
    ("Currency", "euro", "Currency='euro' is not an ISO 4217 code"),
    ("ProcessingInstanceType", "m5.xlarge", "ProcessingInstanceType='m5.xlarge' is not an instance type"),
    ("ModelApprovalStatus", "approved", "ModelApprovalStatus='approved' is not one of PendingManualApproval"),
    ("Rebuild", "maybe", "Rebuild='maybe' is not a valid Boolean. Pass true or false"),
    ("Encoding", "ebcdic", "parameter Encoding='ebcdic' is not one of utf-8, utf-16, latin-1, cp1252 (or empty"),
    ("Timezone", "Mars/Base", "parameter Timezone: time zone 'Mars/Base' is not an IANA time zone name"),
    ("ColumnMapping", "{bad", "parameter ColumnMapping: the column mapping is not JSON"),
    ("TrainingSampleSize", "5000", "parameter TrainingSampleSize=5000 is out of range: use 0 (every customer) or"),
    ("TrainingSampleSize", "-1", "TrainingSampleSize=-1 is out of range"),
    ("TransformInstanceCount", "0", "parameter TransformInstanceCount=0 is out of range: use 1..100"),
    ("TransformInstanceCount", "101", "TransformInstanceCount=101 is out of range"),
    ("TransformInstanceCount", "two", "TransformInstanceCount='two' is not a valid Integer. Pass a whole number"),
])
def test_bad_values_are_named_as_the_user_typed_them(name: str, value: str, message: str) -> None:
    with pytest.raises(PipelineError) as error:
        parameter_values(DECLARED, {name: value})
    assert str(error.value).startswith("--param: ") and message in str(error.value)


@pytest.mark.parametrize(("name", "value"), [("NumClusters", "2"), ("NumClusters", "50"), ("AsOfDate", "2024-02-29"),
                                             ("MinSilhouette", "-1"), ("Currency", "JPY"), ("InputFormat", "cdnow"),
                                             ("ModelApprovalStatus", "Approved"), ("TransformInstanceCount", "1"),
                                             ("TrainingSampleSize", "0"), ("TrainingSampleSize", "10000"),
                                             ("TransformInstanceCount", "100"), ("Encoding", "CP1252")])
def test_good_values_pass(name: str, value: str) -> None:
    assert str(parameter_values(DECLARED, {name: value})[name]).startswith(value.split(".")[0])


def test_input_formats_are_the_feature_readers_formats() -> None:
    from steps.features.formats import FORMAT_NAMES

    assert ("auto", *FORMAT_NAMES) == INPUT_FORMATS


def test_encodings_are_the_feature_readers_encodings() -> None:
    from steps.features import formats

    assert formats.ENCODINGS == ENCODINGS


@pytest.mark.parametrize("k", [0, 1, MIN_CLUSTERS, MAX_CLUSTERS, MAX_CLUSTERS + 1])
def test_num_clusters_range_is_the_training_steps(k: int) -> None:
    from steps.model.train import check_num_clusters

    try:
        check_num_clusters(k, "test")
        trains = True
    except ModelError:
        trains = False
    assert (CHECKS["NumClusters"](k) is None) == trains


def test_help_lists_every_parameter_with_its_default() -> None:
    text = parameters_help()
    for name in HELP:
        assert name in text
    assert "(default 0.25)" in text and "(default USD)" in text
    assert set(DEFAULTS) <= set(HELP)
