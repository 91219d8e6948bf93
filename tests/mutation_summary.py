"""Per-module figures of the last ``mutmut run`` (``make mutation`` prints them; see docs/testing.md).

    python -m tests.mutation_summary [MUTANT-NAME-PATTERN ...]

Reads mutmut's results (``mutants/**/*.py.meta``) and prints, per module, how many mutants of the
given names (fnmatch patterns, as ``mutmut run`` takes them; all when none) were killed, timed out
(counted as killed: the tests did not pass), survived, or were not run yet (an interrupted run; they
are left out of the share). Exits 1 when a module is below 90% killed.
"""

from __future__ import annotations

import fnmatch
import json
import sys
from collections import Counter
from pathlib import Path

TARGET = 0.90
KILLED = {1: "killed", 3: "killed", 36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout"}


def outcomes(root: Path, patterns: list[str]) -> dict[str, Counter[str]]:
    """``{module: Counter(outcome)}`` for the mutants whose names match ``patterns``."""
    by_module: dict[str, Counter[str]] = {}
    for meta in sorted(root.rglob("*.py.meta")):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if patterns and not any(fnmatch.fnmatchcase(name, p) for p in patterns):
                continue
            module = name.split(".x_")[0].split(".xǁ")[0]
            outcome = "not checked" if code is None else KILLED.get(code, "survived" if code == 0 else f"exit {code}")
            by_module.setdefault(module, Counter())[outcome] += 1
    return by_module


def main(argv: list[str]) -> int:
    root = Path("mutants")
    if not root.is_dir():
        print("no mutants/ folder: run `make mutation` first", file=sys.stderr)
        return 1
    below = []
    print(f"{'module':<28} {'mutants':>7} {'killed':>7} {'timeout':>7} {'survived':>8} {'killed %':>8} {'not run':>7}")
    for module, counts in outcomes(root, argv).items():
        checked = sum(counts.values()) - counts["not checked"]
        caught = counts["killed"] + counts["timeout"]
        share = caught / checked if checked else 0.0
        below += [module] if share < TARGET else []
        print(f"{module:<28} {checked:>7} {counts['killed']:>7} {counts['timeout']:>7} "
              f"{checked - caught:>8} {share:>8.1%} {counts['not checked']:>7}")
    if below:
        print(f"below {TARGET:.0%} killed: {', '.join(below)}; `mutmut results` lists the survivors", file=sys.stderr)
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
