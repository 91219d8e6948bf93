"""Print the image tag's hash: sha256 of every file the image is built from, first 16 hex digits.

The files are those the Docker build context admits (``.dockerignore``: ``*`` excluded, then the
``!name`` entries admitted, minus its exclusions) plus the Dockerfile (``containers/Dockerfile``, or the
one ``--dockerfile`` names: the Spark image's ``containers/Dockerfile.spark``). The same sources give
the same tag whatever the checkout (a git clone, CodeBuild's S3 zip, a CodePipeline artifact); a change
to any of them gives a new tag, so an immutable repository gets a new image exactly when one is needed.

    python containers/source_hash.py [ROOT]                                          ->  e.g. 3f2a9c0d1b4e5a67
    python containers/source_hash.py --dockerfile containers/Dockerfile.spark [ROOT]
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
from pathlib import Path

DOCKERFILE = "containers/Dockerfile"


def context_rules(root: Path) -> tuple[list[str], list[str]]:
    """``(admitted, excluded)`` patterns of ``root/.dockerignore`` (after its leading ``*``)."""
    admitted, excluded = [], []
    for line in (root / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line == "*":
            continue
        (admitted if line.startswith("!") else excluded).append(line.lstrip("!").rstrip("/"))
    return admitted, excluded


def image_sources(root: Path, dockerfile: str = DOCKERFILE) -> list[Path]:
    """The files of the build context and ``dockerfile``, as paths relative to ``root``, sorted."""
    admitted, excluded = context_rules(root)
    found: set[Path] = {Path(dockerfile)}
    for entry in admitted:
        path = root / entry
        candidates = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for candidate in candidates:
            relative = candidate.relative_to(root)
            text = relative.as_posix()
            if any(fnmatch.fnmatch(text, pattern.removeprefix("**/")) or fnmatch.fnmatch(text, pattern)
                   or any(fnmatch.fnmatch(part, pattern.removeprefix("**/")) for part in relative.parts)
                   or text.startswith(pattern + "/") for pattern in excluded):
                continue
            found.add(relative)
    return sorted(found, key=lambda p: p.as_posix())


def source_hash(root: Path, dockerfile: str = DOCKERFILE) -> str:
    """16 hex digits of sha256 over each source's path and bytes (``dockerfile`` being one of them)."""
    digest = hashlib.sha256()
    for relative in image_sources(root, dockerfile):
        digest.update(relative.as_posix().encode() + b"\0")
        digest.update((root / relative).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Print the image tag's source hash.")
    parser.add_argument("root", nargs="?", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--dockerfile", default=DOCKERFILE, help=f"relative to ROOT (default {DOCKERFILE})")
    args = parser.parse_args()
    print(source_hash(args.root, args.dockerfile))
