"""Code that runs inside the project's one container image.

Four parts, one subpackage each: ``features/`` (transactions -> per-customer RFM features),
``model/`` (k-means segmenter: train, evaluate, serve), ``report/`` (report.html from the
artifacts) and ``sample/`` (the bundled sample data). The modules here are the facts and
helpers every part shares: column names (``columns``), the segment grid (``segments``),
container paths (``paths``), errors, environment, CLI support and package metadata keys.
"""
