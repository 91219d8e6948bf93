"""Batch transform on this machine: ``serve`` on a loopback port, fed as SageMaker feeds it.

Each input file is split by line into mini-batches of at most
``MaxPayloadInMB``, posted to ``/invocations`` in order, and the answers
assembled by line into ``<file>.out``, as a ``MultiRecord`` transform job does.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from pipeline.local.containers import executable
from steps.errors import PipelineError

STARTUP_SECONDS = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(model_dir: Path, log_file: Path, workers: int = 1) -> Iterator[int]:
    """Start ``serve`` for ``model_dir`` on 127.0.0.1; yield its port; stop it after."""
    port = free_port()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [executable("serve"), "--model-dir", str(model_dir), "--host", "127.0.0.1",
               "--port", str(port), "--workers", str(workers)]
    with log_file.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_ready(port, process, log_file)
            yield port
        finally:
            process.terminate()  # SIGTERM, as SageMaker stops a container: gunicorn's graceful stop
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait_ready(port: int, process: subprocess.Popen, log_file: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PipelineError("serve exited before answering /ping", str(log_file), "see the serve log")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                connection.request("GET", "/ping")
                if connection.getresponse().status == 200:
                    return
            finally:
                connection.close()  # an open keep-alive connection holds the server's shutdown
        except OSError:
            time.sleep(0.1)
    raise PipelineError(f"serve did not answer /ping within {STARTUP_SECONDS} s", str(log_file))


def mini_batches(path: Path, max_bytes: int) -> Iterator[bytes]:
    """Whole lines of ``path``, grouped into payloads of at most ``max_bytes``."""
    batch: list[bytes] = []
    size = 0
    with path.open("rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            if len(line) > max_bytes:
                raise PipelineError(f"a record is larger than MaxPayloadInMB ({len(line)} bytes)", str(path))
            if size + len(line) > max_bytes and batch:
                yield b"".join(batch)
                batch, size = [], 0
            batch.append(line)
            size += len(line)
    if batch:
        yield b"".join(batch)


def transform_file(port: int, source: Path, target: Path, content_type: str, accept: str, max_mb: int) -> int:
    """Post ``source`` in mini-batches; write the answers to ``target``; return the batch count."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    batches = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with closing(connection), target.open("wb") as out:
        for payload in mini_batches(source, max_mb * 1024 * 1024):
            connection.request("POST", "/invocations", body=payload,
                               headers={"Content-Type": content_type, "Accept": accept})
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                answer = body[:300].decode(errors="replace")
                raise PipelineError(f"serve answered {response.status} for mini-batch {batches + 1}: {answer}",
                                    str(source))
            out.write(body if body.endswith(b"\n") or not body else body + b"\n")
            batches += 1
    return batches
