"""The segmentation model: k-means on the RFM features, its artifact, evaluation and batch-transform serving.

``train`` (rfm-train / ``train``), ``evaluate`` (rfm-evaluate), ``serve`` (rfm-serve / ``serve``, on
gunicorn's asyncio worker: ``wsgi_bridge`` hands it complete requests, ``serve_worker`` stops it promptly).
It reads ``rfm.parquet`` as a table and never imports ``features/``' readers; the evaluation job hands
its results to ``report/`` to render, and nothing here imports ``sample/``.
"""
