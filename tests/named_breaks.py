"""The breaks issue 17 named, applied one at a time to a scratch copy of HEAD: each must fail its tests.

    python -m tests.named_breaks [N ...]

For each break (all, or the numbered ones): export HEAD with ``git archive`` to a scratch folder,
make the one change, run the tests that guard it, and print ``caught`` (the tests failed) or
``MISSED``. Quicker than a whole ``make mutation`` when checking these rules; docs/testing.md has
the last figures.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (what breaks, file, text, replacement, test module, -k expression)
BREAKS = [
    (
        'serve: no f_score range check',
        'steps/model/serve.py',
        'if name in (c.R_SCORE, c.F_SCORE):',
        'if name == c.R_SCORE:',
        'tests/test_serve.py',
        'scores_outside',
    ),
    (
        'serve: no whole-number check',
        'steps/model/serve.py',
        ' | (column != np.round(column))',
        '',
        'tests/test_serve.py',
        'scores_outside',
    ),
    (
        'trigger: ETag not in the idempotency key',
        'lambdas/trigger/app.py',
        'event_key_jmespath="[bucket, key, version_id, etag]"',
        'event_key_jmespath="[bucket, key, version_id]"',
        'tests/test_trigger.py',
        'new_version_of_same_key',
    ),
    (
        "approval: no 'already exists' branch",
        'lambdas/approval/app.py',
        'if "already exist" in message.lower():',
        'if False:',
        'tests/test_approval.py',
        'refuses_to_create_twice',
    ),
    (
        "approval: no 'modified after registration' condition",
        'lambdas/approval/app.py',
        ' and (modified is None or modified == created)',
        '',
        'tests/test_approval.py',
        'approved_again_later or which_approved',
    ),
    (
        'approval: handler skips the event check',
        'lambdas/approval/app.py',
        'if not isinstance(event, dict) or not isinstance(event.get("detail"), dict):',
        'if False:',
        'tests/test_approval.py',
        'handler',
    ),
    (
        'segmenter: recency sign flipped',
        'steps/model/segmenter.py',
        'value = -centers[:, 0] + centers[:, 1] + centers[:, 2]',
        'value = centers[:, 0] + centers[:, 1] + centers[:, 2]',
        'tests/test_segmenter.py',
        'cluster_zero',
    ),
    (
        'segmenter: smallest near-best k',
        'steps/model/segmenter.py',
        'winner = max(k for k, value in zip(candidates, silhouettes[row], strict=True)',
        'winner = min(k for k, value in zip(candidates, silhouettes[row], strict=True)',
        'tests/test_segmenter.py',
        'equally_good',
    ),
    (
        'scoring: tie-break < for <=',
        'steps/features/scoring.py',
        'target - share_through[i - 1] <= share_through[i] - target',
        'target - share_through[i - 1] < share_through[i] - target',
        'tests/test_scoring.py',
        'cut_examples or nearest',
    ),
    (
        'scoring: nearest boundary never the lower one',
        'steps/features/scoring.py',
        '            i -= 1\n',
        '            pass\n',
        'tests/test_scoring.py',
        'cut_examples or nearest',
    ),
]


def check(number: int) -> bool:
    """Apply break ``number`` to a copy of HEAD and run its tests; True when they fail (caught)."""
    label, path, old, new, tests, expression = BREAKS[number]
    with tempfile.TemporaryDirectory(prefix="named-break-") as scratch:
        work = Path(scratch)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(work)], input=archive.stdout, check=True)
        text = (work / path).read_text()
        if text.count(old) != 1:
            raise SystemExit(f"break {number} ({label}): the text to change is not in {path} once; update BREAKS")
        (work / path).write_text(text.replace(old, new))
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", tests,
                              "-k", expression], cwd=work, capture_output=True, text=True, check=False)
    caught = run.returncode == 1
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr.strip()[-200:]
    print(f"{'caught' if caught else 'MISSED'}: {label} ({tests} -k {expression!r}): {summary}", flush=True)
    return caught


def main(argv: list[str]) -> int:
    numbers = [int(arg) for arg in argv] or range(len(BREAKS))
    return 0 if all([check(n) for n in numbers]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
