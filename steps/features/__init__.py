"""RFM features: read transaction files, normalise them, quarantine bad rows, aggregate per customer, score.

The ComputeRFM processing step (``job``: the ``rfm-features`` entrypoint; ``compute``: the pure core).
Imports only ``steps``' shared modules; never ``model/``, ``report/`` or ``sample/``.
"""
