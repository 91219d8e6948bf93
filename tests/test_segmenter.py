"""The segmenter: planted k is found, names are stable, the artifact round-trips."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from steps import columns as c
from steps.errors import ModelError
from steps.model.limits import MAX_TRAINING_CUSTOMERS, MIN_TRAINING_SAMPLE
from steps.model.model_io import load_model
from steps.model.segmenter import SILHOUETTE_TOLERANCE, Segmenter
from steps.model.train import read_hyperparameters, train


def planted(k: int, per_group: int = 400, seed: int = 0) -> pd.DataFrame:
    """``k`` tight groups whose centres are far apart in log space (recency, frequency, spend)."""
    rng = np.random.default_rng(seed)
    centers: list[np.ndarray] = []
    while len(centers) < k:  # random centres, every pair at least 1.5 apart in each group's log space
        candidate = rng.uniform([0.5, 0.0, 2.0], [6.5, 3.0, 8.0])
        if all(np.linalg.norm(candidate - other) >= 1.5 for other in centers):
            centers.append(candidate)
    logs = np.vstack([center + rng.normal(0, 0.05, (per_group, 3)) for center in centers])
    return pd.DataFrame(np.expm1(logs), columns=list(c.MODEL_FEATURES))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("k", [2, 3, 4, 5, 7])
def test_automatic_k_finds_the_planted_groups(k: int, seed: int) -> None:
    segmenter = Segmenter(n_clusters=0, random_state=seed).fit(planted(k, seed=seed))
    assert segmenter.k_ == k
    assert [row["k"] for row in segmenter.k_selection_] == list(range(2, 11))


def test_same_seed_gives_same_clusters_and_names(features_frame: pd.DataFrame) -> None:
    first = Segmenter(n_clusters=0, random_state=3).fit(features_frame)
    second = Segmenter(n_clusters=0, random_state=3).fit(features_frame)
    assert first.names_ == second.names_
    np.testing.assert_array_equal(first.kmeans_.labels_, second.kmeans_.labels_)


def test_names_are_unique_and_describe_the_profile(features_frame: pd.DataFrame) -> None:
    segmenter = Segmenter(n_clusters=3, random_state=0).fit(features_frame)
    assert len(set(segmenter.names_)) == 3
    assert segmenter.names_[0].startswith("Recent")  # cluster 0 is the most valuable
    assert segmenter.names_[-1].startswith("Lapsed")
    assert all(segment for segment in segmenter.dominant_segments_)


def test_cluster_ids_are_ordered_by_value(features_frame: pd.DataFrame) -> None:
    segmenter = Segmenter(n_clusters=3, random_state=0).fit(features_frame)
    means = [profile["mean"][c.MONETARY] for profile in segmenter.profiles_]
    assert means == sorted(means, reverse=True)


def test_too_few_customers_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match="too few"):
        Segmenter().fit(planted(2, per_group=1))


def test_artifact_round_trips_without_private_classes(tmp_path: Path, features_frame: pd.DataFrame) -> None:
    meta = train(features_frame, tmp_path / "model", num_clusters=3, random_state=0)
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in (tmp_path / "model").iterdir():
            tar.add(path, arcname=path.name)
    model = load_model(archive)
    assert model.k == meta["k"] == 3
    refit = Segmenter(n_clusters=3, random_state=0).fit(features_frame)
    np.testing.assert_array_equal(model.assign(features_frame)[c.CLUSTER], refit.predict(features_frame))
    json.dumps(model.meta)  # plain JSON: no pickled classes needed to serve


def test_broken_artifact_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "model.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(ModelError, match="TrainSegmenter"):
        load_model(tmp_path)


@pytest.mark.parametrize(("raw", "expected"), [
    ({}, {"num_clusters": 0, "random_state": 0, "max_customers": MAX_TRAINING_CUSTOMERS}),
    ({"num_clusters": "5", "random_state": "7"}, {"num_clusters": 5, "random_state": 7,
                                                  "max_customers": MAX_TRAINING_CUSTOMERS}),
    ({"num_clusters": '"4"', "max_customers": "0"}, {"num_clusters": 4, "random_state": 0, "max_customers": 0}),
    ({"max_customers": "50000"}, {"num_clusters": 0, "random_state": 0, "max_customers": 50_000}),
])
def test_hyperparameters_from_sagemaker_strings(tmp_path: Path, raw: dict, expected: dict) -> None:
    path = tmp_path / "hyperparameters.json"
    path.write_text(json.dumps(raw))
    assert read_hyperparameters(path) == expected


@pytest.mark.parametrize("raw", [{"num_clusters": "five"}, {"num_clusters": "1"}, {"num_clusters": "99"},
                                 {"max_customers": "9999"}, {"max_customers": "-1"}, {"max_customers": "all"}])
def test_bad_hyperparameters_are_clear_errors(tmp_path: Path, raw: dict) -> None:
    path = tmp_path / "hyperparameters.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ModelError, match=next(iter(raw))):
        read_hyperparameters(path)


# --- issue 16: training on a bounded sample ----------------------------------------------------------------------


def test_above_max_customers_the_fit_uses_a_sample_and_assigns_everyone() -> None:
    frame = planted(4, per_group=1_500, seed=2)  # 6,000 customers
    segmenter = Segmenter(n_clusters=0, random_state=0, max_customers=2_000).fit(frame)
    assert (segmenter.customers_, segmenter.sample_size_) == (6_000, 2_000)
    assert len(segmenter.kmeans_.labels_) == 2_000  # the centres were fitted on the sample only
    assert segmenter.k_ == 4
    sizes = [profile["size"] for profile in segmenter.profiles_]
    assert sum(sizes) == 6_000 and sizes == [1_500] * 4  # but every customer is assigned and described
    full = Segmenter(n_clusters=0, random_state=0, max_customers=0).fit(frame)
    assert (full.customers_, full.sample_size_) == (6_000, 6_000)
    assert full.k_ == segmenter.k_ and full.names_ == segmenter.names_


def test_the_training_sample_does_not_depend_on_the_seed(features_frame: pd.DataFrame) -> None:
    """k is chosen on the sample, and k must not change with RandomSeed: the sample's seed is fixed."""
    bounded = len(features_frame) // 2
    first = Segmenter(n_clusters=0, random_state=0, max_customers=bounded).fit(features_frame)
    other = Segmenter(n_clusters=0, random_state=3, max_customers=bounded).fit(features_frame)
    assert first.sample_size_ == other.sample_size_ == bounded
    assert first.k_selection_ == other.k_selection_ and first.k_ == other.k_


def test_train_records_the_training_sample(tmp_path: Path, features_frame: pd.DataFrame) -> None:
    meta = train(features_frame, tmp_path / "model", num_clusters=3, random_state=0, max_customers=250)
    assert meta["training_sample"] == {"customers": len(features_frame), "fitted_on": 250, "max_customers": 250}
    assert meta["hyperparameters"]["max_customers"] == 250
    assert sum(profile["size"] for profile in meta["profiles"]) == len(features_frame)
    assert json.loads((tmp_path / "model" / "model.json").read_text())["training_sample"]["fitted_on"] == 250


@pytest.mark.parametrize("n", [0, 1, MIN_TRAINING_SAMPLE - 1, MIN_TRAINING_SAMPLE, MAX_TRAINING_CUSTOMERS])
def test_training_sample_size_range_is_the_training_steps(n: int) -> None:
    from pipeline.parameters import CHECKS
    from steps.model.train import check_max_customers

    try:
        check_max_customers(n, "test")
        trains = True
    except ModelError:
        trains = False
    assert (CHECKS["TrainingSampleSize"](n) is None) == trains


def two_groups_differing_in(feature: str, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Two groups of 200 that differ only in ``feature`` (the better group first); the others are shared noise."""
    rng = np.random.default_rng(seed)
    logs = rng.normal([3.0, 1.0, 4.0], 0.3, (400, 3))
    column = list(c.MODEL_FEATURES).index(feature)
    better_is_lower = feature == c.RECENCY_DAYS
    gap = -2.5 if better_is_lower else 2.5
    logs[:200, column] += gap  # rows 0..199 are the better group
    frame = pd.DataFrame(np.expm1(np.clip(logs, 0, None)), columns=list(c.MODEL_FEATURES))
    better = np.arange(400) < 200
    return frame, better


@pytest.mark.parametrize("feature", list(c.MODEL_FEATURES))
def test_cluster_zero_is_the_more_recent_frequent_or_higher_spending_group(feature: str) -> None:
    """Cluster ids are ordered by value: more recent (fewer days), more orders, more spend come first."""
    frame, better = two_groups_differing_in(feature)
    segmenter = Segmenter(n_clusters=2, random_state=0).fit(frame)
    labels = segmenter.kmeans_.labels_
    assert set(labels[better]) == {0} and set(labels[~better]) == {1}
    np.testing.assert_array_equal(segmenter.predict(frame), labels)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_of_equally_good_k_the_largest_wins(seed: int) -> None:
    """Silhouettes within SILHOUETTE_TOLERANCE of the best count as equal; more segments are more actionable."""
    rng = np.random.default_rng(seed)
    no_structure = pd.DataFrame(np.expm1(rng.uniform([0.5, 0.0, 2.0], [6.5, 3.0, 8.0], (600, 3))),
                                columns=list(c.MODEL_FEATURES))
    segmenter = Segmenter(n_clusters=0, random_state=0).fit(no_structure)
    silhouettes = {row["k"]: row["silhouette"] for row in segmenter.k_selection_}
    near_best = [k for k, s in silhouettes.items() if s >= max(silhouettes.values()) - SILHOUETTE_TOLERANCE]
    assert len(near_best) > 1  # the rule matters for this data
    assert segmenter.k_ == max(near_best) == len(segmenter.names_)


# --- issue 15: k does not depend on the seed -------------------------------------------------------------------------


def features_of(transactions: Path, folder: Path) -> pd.DataFrame:
    from steps.features.job import main as features_main

    assert features_main(["--input", str(transactions), "--output", str(folder)]) == 0
    return pd.read_parquet(folder / "rfm.parquet")


def test_k_votes_are_recorded_and_sum_to_the_selection_seeds(features_frame: pd.DataFrame) -> None:
    from steps.model.segmenter import SELECTION_SEEDS

    segmenter = Segmenter(n_clusters=0, random_state=0).fit(features_frame)
    assert sum(segmenter.k_votes_.values()) == len(SELECTION_SEEDS)
    assert segmenter.k_votes_[segmenter.k_] == max(segmenter.k_votes_.values())
    assert all("silhouette_std" in row for row in segmenter.k_selection_)


@pytest.mark.slow
def test_k_does_not_change_with_the_seed_on_the_bundled_sample(tmp_path: Path) -> None:
    from tests.conftest import SAMPLE

    features = features_of(SAMPLE, tmp_path / "features")
    ks = {seed: Segmenter(n_clusters=0, random_state=seed).fit(features).k_ for seed in (0, 3)}
    assert len(set(ks.values())) == 1, ks


# Above SELECTION_SAMPLE customers each selection seed draws its own sample: the case issue 15 asked about at
# 150,000 customers. `make test` proves it on 25,000 generated customers (the same code path, about half the
# time: the fits cost the same, the transactions and features a sixth); `make bench` runs the 150,000
# (RFM_K_STABILITY_CUSTOMERS=150000).
K_STABILITY_CUSTOMERS = int(os.environ.get("RFM_K_STABILITY_CUSTOMERS", "25000"))


@pytest.mark.slow
def test_k_does_not_change_with_the_seed_above_the_selection_sample(tmp_path: Path) -> None:
    from steps.model.segmenter import SELECTION_SAMPLE
    from steps.sample.generate import write_sample

    transactions = tmp_path / "transactions.csv.gz"
    write_sample(transactions, K_STABILITY_CUSTOMERS, seed=42)
    features = features_of(transactions, tmp_path / "features")
    assert len(features) > max(SELECTION_SAMPLE, 0.93 * K_STABILITY_CUSTOMERS)
    fits = {seed: Segmenter(n_clusters=0, random_state=seed).fit(features) for seed in (0, 3)}
    assert fits[0].k_ == fits[3].k_, {seed: fit.k_selection_ for seed, fit in fits.items()}
    assert fits[0].names_ == fits[3].names_


def test_the_k_vote_is_reproducible_and_reports_every_candidate() -> None:
    """The same data gives the same vote and figures whatever RandomSeed (it seeds the final fit only)."""
    frame = planted(3, per_group=100, seed=4)
    first = Segmenter(n_clusters=0, random_state=0).fit(frame)
    other_seed = Segmenter(n_clusters=0, random_state=7).fit(frame)
    assert first.k_selection_ == other_seed.k_selection_  # the figures are not random: equal to the last digit
    assert first.k_votes_ == other_seed.k_votes_ == {3: 5}
    assert [sorted(row) for row in first.k_selection_] == [["inertia", "k", "silhouette", "silhouette_std"]] * 9
    best = max(first.k_selection_, key=lambda row: row["silhouette"])
    assert best["k"] == 3 and best["silhouette_std"] < 0.05  # three far-apart groups: every seed agrees
    inertias = [row["inertia"] for row in first.k_selection_]
    assert inertias[0] > inertias[1] > inertias[2] > 0  # more clusters, tighter ones, up to the planted three


def test_the_k_with_most_votes_wins_not_the_largest_voted() -> None:
    """Each selection seed votes; the k with most votes wins, even when a larger k got a vote too."""
    rng = np.random.default_rng(4)
    no_structure = pd.DataFrame(np.expm1(rng.uniform([0.5, 0.0, 2.0], [6.5, 3.0, 8.0], (600, 3))),
                                columns=list(c.MODEL_FEATURES))
    segmenter = Segmenter(n_clusters=0, random_state=0).fit(no_structure)
    assert max(segmenter.k_votes_) != segmenter.k_  # the votes split, and not in favour of the largest k
    assert segmenter.k_votes_[segmenter.k_] == max(segmenter.k_votes_.values())
