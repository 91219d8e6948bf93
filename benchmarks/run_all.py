"""Run every benchmark, one after the other, each in its own process (``make bench``).

    python benchmarks/run_all.py [--quick]

``--quick`` runs each at a tenth of its size (a smoke test of the scripts, not the figures).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = {
    "features_bench.py": ([], ["--rows", "1000000", "--customers", "100000"]),
    "train_bench.py": ([], ["--customers", "100000"]),
    "serve_bench.py": ([], ["--customers", "100000"]),
    "history_bench.py": ([], ["--rows-per-day", "10000", "--customers", "100000", "--skip-rebuild"]),
    "export_delta_bench.py": ([], ["--customers", "2000"]),
    "export_memory_bench.py": ([], ["--customers", "100000"]),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes")
    args = parser.parse_args()
    failed = []
    for script, (full, quick) in BENCHMARKS.items():
        print(f"\n=== {script} ===", flush=True)
        completed = subprocess.run([sys.executable, str(HERE / script), *(quick if args.quick else full)], check=False)
        if completed.returncode:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
