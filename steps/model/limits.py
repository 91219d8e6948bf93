"""Limits of the model's parameters, shared by the training step and the pipeline's parameter checks.

A module of its own, with no imports, so the ``rfm`` command line can check a value without loading
scikit-learn.
"""

MIN_CLUSTERS, MAX_CLUSTERS = 2, 50  # NumClusters: 0 (choose automatically) or this range

# TrainingSampleSize: with more customers than this, the segmenter is fitted (scaler, k vote, k-means,
# names) on a sample of this many, drawn with TRAINING_SAMPLE_SEED, and then assigns every customer.
# docs/model.md ("Training on a sample") has the measured effect on k and the silhouette.
MAX_TRAINING_CUSTOMERS = 200_000
MIN_TRAINING_SAMPLE = 10_000  # TrainingSampleSize: 0 (every customer) or at least this
# A fixed seed, not RandomSeed: k must not change with the seed (the k vote's rule), so neither may the
# customers it is chosen on.
TRAINING_SAMPLE_SEED = 0
