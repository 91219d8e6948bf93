"""report.html: charts and tables built from the run's artifacts (features, model, evaluation, quality).

It reads artifacts and renders them; it never recomputes features or refits the model,
and it never imports ``features/`` or ``sample/``.
"""
