"""The Spark step's submit app: ``smspark-submit app.py ARGS`` runs ``rfm-features --engine spark ARGS``.

SageMaker stages this file as the step's ``code`` input; the image must hold
the project's package (see docs/scale.md, "The image").
"""

from __future__ import annotations

import sys

from steps.features.job import main

if __name__ == "__main__":
    sys.exit(main(["--engine", "spark", *sys.argv[1:]]))
