"""Limits of the model's parameters, shared by the training step and the pipeline's parameter checks.

A module of its own, with no imports, so the ``rfm`` command line can check a value without loading
scikit-learn.
"""

MIN_CLUSTERS, MAX_CLUSTERS = 2, 50  # NumClusters: 0 (choose automatically) or this range
