"""Run a container step's command as a subprocess, with container paths mapped to folders.

The image runs ``train`` and ``serve`` (symlinks to ``rfm-train`` and
``rfm-serve`` in ``containers/Dockerfile``) and the processing entrypoints by
name; here the same console scripts run from this Python environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from steps.errors import PipelineError

CONTAINER_ROOT = "/opt/ml"
IMAGE_COMMANDS = {"train": "rfm-train", "serve": "rfm-serve"}


def executable(name: str) -> str:
    """Path of a console script of this environment (``train`` -> ``rfm-train``)."""
    name = IMAGE_COMMANDS.get(name, name)
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise PipelineError(
            f"command {name!r} not found", "local runner", "install the project: pip install -e . -c constraints.txt"
        )
    return found


class ContainerPaths:
    """Maps ``/opt/ml/...`` inside the container to ``<root>/opt/ml/...`` on this machine."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def local(self, container_path: str) -> Path:
        return self.root / container_path.lstrip("/")

    def rewrite(self, argument: str) -> str:
        """A container argument with any ``/opt/ml`` path (also after ``--opt=``) mapped."""
        if argument.startswith(CONTAINER_ROOT):
            return str(self.local(argument))
        option, sep, value = argument.partition("=")
        if sep and value.startswith(CONTAINER_ROOT):
            return f"{option}={self.local(value)}"
        return argument


def run_command(command: list[str], env: dict[str, str], log_file: Path, step: str) -> None:
    """Run ``command``; on failure raise with the last lines of its output."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **env}
    with log_file.open("w") as log:
        completed = subprocess.run(command, env=full_env, stdout=log, stderr=subprocess.STDOUT, check=False)
    if completed.returncode != 0:
        lines = [line for line in log_file.read_text().splitlines() if line.strip()]
        detail = lines[-1].removeprefix("error: ").rstrip(".") if lines else f"exit code {completed.returncode}"
        raise PipelineError(detail, None, f"Step log: {log_file}")
