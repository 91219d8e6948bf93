"""The segmenter: scaled RFM features, k-means, and a human name per cluster.

Why log then standardise: recency, frequency and spend are heavy-tailed (a few
customers order hundreds of times or spend thousands), so raw k-means spends
its clusters on outliers and lets monetary, the largest number, dominate the
distance. ``sign(x) * log1p(|x|)`` compresses the tails (and keeps net-negative
spend finite); standardising then gives each feature an equal say.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from steps import columns as c
from steps.model.limits import MAX_TRAINING_CUSTOMERS, TRAINING_SAMPLE_SEED
from steps.model.model_io import log_transform

K_RANGE = range(2, 11)
SELECTION_SAMPLE = 20_000
N_INIT = 4
# k is a property of the data, not of a seed: each of these seeds draws its own sample and fits
# k-means for every candidate k; each seed votes for its best k, and the k with most votes wins
# (ties: the higher mean silhouette). RandomSeed seeds the final fit only, so it cannot change k.
SELECTION_SEEDS = (0, 1, 2, 3, 4)
SELECTION_N_INIT = 2
SILHOUETTE_SAMPLE = 4_000  # per seed: 5 x 4,000 customers in all
# Candidates whose silhouette is within this of a seed's best count as equally good (about the
# sampling noise of a 4,000-customer silhouette); the largest such k gets that seed's vote,
# since more segments are more actionable.
SILHOUETTE_TOLERANCE = 0.02


def feature_matrix(frame: pd.DataFrame) -> np.ndarray:
    """The model's input columns (``steps.columns.MODEL_FEATURES``) as a float matrix."""
    return frame[list(c.MODEL_FEATURES)].to_numpy(dtype=float)


def _level(value: float, low: float, high: float, words: tuple[str, str, str]) -> str:
    return words[0] if value <= low else words[2] if value >= high else words[1]


def describe_cluster(profile: dict[str, float], quantiles: dict[str, tuple[float, float]]) -> str:
    """A human name from a cluster's median recency, frequency and spend.

    Levels are relative to the whole customer base (its 33rd and 67th percentiles).

    Examples
    --------
    >>> q = {"recency_days": (30, 180), "frequency": (1, 3), "monetary": (50, 300)}
    >>> describe_cluster({"recency_days": 10, "frequency": 8, "monetary": 900}, q)
    'Recent frequent high spenders'
    >>> describe_cluster({"recency_days": 400, "frequency": 1, "monetary": 20}, q)
    'Lapsed one-time low spenders'
    """
    recency = _level(profile[c.RECENCY_DAYS], *quantiles[c.RECENCY_DAYS], ("Recent", "Lapsing", "Lapsed"))
    freq_low, freq_high = quantiles[c.FREQUENCY]
    if profile[c.FREQUENCY] <= 1:
        frequency = "one-time"
    else:
        frequency = _level(profile[c.FREQUENCY], freq_low, freq_high, ("occasional", "regular", "frequent"))
    spend = _level(profile[c.MONETARY], *quantiles[c.MONETARY], ("low", "mid", "high"))
    return f"{recency} {frequency} {spend} spenders"


class Segmenter:
    """Scale RFM features, fit k-means, choose k, and name the clusters.

    Parameters
    ----------
    n_clusters : int
        Number of clusters; 0 chooses k in 2..10: for each of ``SELECTION_SEEDS``, on its own
        sample, the largest k within ``SILHOUETTE_TOLERANCE`` of that seed's best silhouette
        gets a vote; the k with most votes wins (ties: the higher mean silhouette).
    random_state : int
        Seed for sampling and k-means; the same seed gives the same clusters and names.
    max_customers : int
        With more customers than this, everything is fitted on a sample of this many (drawn with
        ``TRAINING_SAMPLE_SEED``, so k does not depend on ``random_state``) and every customer is
        then assigned to its nearest centre; 0 fits on every customer.

    Attributes
    ----------
    k_ : int
    customers_ : int
        Customers given to ``fit``.
    sample_size_ : int
        Customers the model was fitted on (``customers_`` when not sampled).
    scaler_ : StandardScaler
    kmeans_ : KMeans
    names_ : list of str
        One human name per cluster, unique.
    dominant_segments_ : list of str
        The most common ``rfm_segment`` of each cluster (when given).
    k_selection_ : list of dict
        ``k``, ``silhouette`` and ``inertia`` per candidate, means over the selection seeds, and
        ``silhouette_std`` (empty when k was given).
    k_votes_ : dict
        How many selection seeds voted for each k (empty when k was given).
    profiles_ : list of dict
        Per cluster: size, share, median and mean of each feature, over every customer.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> frame = pd.DataFrame({"recency_days": rng.integers(1, 400, 300),
    ...                       "frequency": rng.integers(1, 9, 300),
    ...                       "monetary": rng.gamma(2, 50, 300)})
    >>> Segmenter(n_clusters=3, random_state=0).fit(frame).k_
    3
    """

    def __init__(self, n_clusters: int = 0, random_state: int = 0,
                 max_customers: int = MAX_TRAINING_CUSTOMERS) -> None:
        self.n_clusters = n_clusters
        self.random_state = random_state
        self.max_customers = max_customers

    def fit(self, frame: pd.DataFrame) -> Segmenter:
        # Three features: BLAS threads only contend (silhouette's distance products are tiny).
        with threadpool_limits(1, user_api="blas"):
            return self._fit(frame)

    def _fit(self, frame: pd.DataFrame) -> Segmenter:
        if len(frame) < 3:
            from steps.errors import ModelError

            raise ModelError(
                f"{len(frame)} customer(s) are too few to segment", "TrainSegmenter", "use more transactions"
            )
        everyone = frame
        self.customers_ = len(frame)
        if self.max_customers and len(frame) > self.max_customers:
            rows = np.random.default_rng(TRAINING_SAMPLE_SEED).choice(len(frame), int(self.max_customers),
                                                                      replace=False)
            frame = frame.iloc[np.sort(rows)]
        self.sample_size_ = len(frame)
        scaled_raw = log_transform(feature_matrix(frame))
        self.scaler_ = StandardScaler().fit(scaled_raw)
        scaled = self.scaler_.transform(scaled_raw)
        n_distinct = len(pd.DataFrame(scaled).drop_duplicates())
        sample = self._sample(scaled)
        self.k_selection_, self.k_votes_ = [], {}
        # Many small fits on samples: one thread each (OpenMP threads only contend, above all on a busy host).
        with threadpool_limits(1):
            if self.n_clusters:
                k = min(int(self.n_clusters), n_distinct)
            else:
                k = self._choose_k(scaled, max_k=min(max(K_RANGE), n_distinct - 1, len(frame) - 1))
            seed_model = KMeans(n_clusters=k, n_init=N_INIT, random_state=self.random_state).fit(sample)
        # Refine the sample's centres on every customer: one k-means run instead of N_INIT.
        kmeans = KMeans(n_clusters=k, init=seed_model.cluster_centers_, n_init=1, random_state=self.random_state)
        self._order_clusters(kmeans.fit(scaled))
        self.k_ = k
        labels = self.kmeans_.labels_ if everyone is frame else self.predict(everyone)
        self._describe(everyone, labels)
        return self

    def _sample(self, scaled: np.ndarray, seed: int | None = None) -> np.ndarray:
        """At most ``SELECTION_SAMPLE`` rows, drawn with ``seed`` (default the random state; all rows when fewer)."""
        if len(scaled) <= SELECTION_SAMPLE:
            return scaled
        rng = np.random.default_rng(self.random_state if seed is None else seed)
        return scaled[np.sort(rng.choice(len(scaled), SELECTION_SAMPLE, replace=False))]

    def _choose_k(self, scaled: np.ndarray, max_k: int) -> int:
        """The k most selection seeds vote for (see the class docstring); fills ``k_selection_`` and ``k_votes_``."""
        candidates = list(range(min(K_RANGE), max(min(K_RANGE), max_k) + 1))
        silhouettes = np.zeros((len(SELECTION_SEEDS), len(candidates)))
        inertias = np.zeros_like(silhouettes)
        votes: dict[int, int] = {}
        for row, seed in enumerate(SELECTION_SEEDS):
            sample = self._sample(scaled, seed)
            for col, k in enumerate(candidates):
                model = KMeans(n_clusters=k, n_init=SELECTION_N_INIT, random_state=seed).fit(sample)
                silhouettes[row, col] = silhouette_score(sample, model.labels_,
                                                         sample_size=min(SILHOUETTE_SAMPLE, len(sample)),
                                                         random_state=seed)
                inertias[row, col] = model.inertia_
            best = silhouettes[row].max()
            winner = max(k for k, value in zip(candidates, silhouettes[row], strict=True)
                         if value >= best - SILHOUETTE_TOLERANCE)
            votes[winner] = votes.get(winner, 0) + 1
        means = silhouettes.mean(axis=0)
        self.k_selection_ = [{"k": k, "silhouette": float(means[i]), "inertia": float(inertias[:, i].mean()),
                              "silhouette_std": float(silhouettes[:, i].std())} for i, k in enumerate(candidates)]
        self.k_votes_ = {k: votes[k] for k in sorted(votes)}
        return max(votes, key=lambda k: (votes[k], means[candidates.index(k)]))

    def _order_clusters(self, kmeans: KMeans) -> None:
        """Renumber clusters by value (recent, frequent, high spend first) for stable ids."""
        centers = kmeans.cluster_centers_
        value = -centers[:, 0] + centers[:, 1] + centers[:, 2]
        order = np.array(sorted(range(len(value)), key=lambda cluster: -value[cluster]))  # stable: ties keep ids
        kmeans.cluster_centers_ = centers[order]
        remap = np.empty_like(order)
        remap[order] = np.arange(len(order))
        kmeans.labels_ = remap[kmeans.labels_]
        self.kmeans_ = kmeans

    def _describe(self, frame: pd.DataFrame, labels: np.ndarray) -> None:
        quantiles = {
            name: tuple(np.quantile(frame[name].to_numpy(dtype=float), [1 / 3, 2 / 3]))
            for name in c.MODEL_FEATURES
        }
        self.profiles_, self.names_, self.dominant_segments_ = [], [], []
        for cluster in range(self.k_):
            members = frame[labels == cluster]
            median = {name: float(members[name].median()) for name in c.MODEL_FEATURES}
            mean = {name: float(members[name].mean()) for name in c.MODEL_FEATURES}
            dominant = ""
            if c.RFM_SEGMENT in frame and len(members):
                dominant = str(members[c.RFM_SEGMENT].value_counts().sort_index().idxmax())
            self.dominant_segments_.append(dominant)
            self.names_.append(describe_cluster(median, quantiles))
            self.profiles_.append(
                {"cluster": cluster, "size": int(len(members)), "share": len(members) / len(frame),
                 "median": median, "mean": mean}
            )
        self.names_ = _unique_names(self.names_, self.dominant_segments_)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Cluster of each row of ``frame`` (needs ``MODEL_FEATURES``)."""
        scaled = self.scaler_.transform(log_transform(feature_matrix(frame)))
        return self.kmeans_.predict(scaled)


def _unique_names(names: list[str], dominant: list[str]) -> list[str]:
    """Disambiguate repeated names with the dominant RFM segment, then number what still repeats.

    Examples
    --------
    >>> _unique_names(["A", "A", "A", "B"], ["X", "X", "Y", "Z"])
    ['A (X) #1', 'A (X) #2', 'A (Y)', 'B']
    """
    out = [f"{name} ({dominant[i]})" if names.count(name) > 1 and dominant[i] else name
           for i, name in enumerate(names)]
    seen: dict[str, int] = {}
    numbered = []
    for name in out:
        if out.count(name) > 1:
            seen[name] = seen.get(name, 0) + 1
            name = f"{name} #{seen[name]}"
        numbered.append(name)
    return numbered
