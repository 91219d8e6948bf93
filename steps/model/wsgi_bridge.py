"""Serve a WSGI app (serve's Flask app) from gunicorn's asyncio worker.

Why: with threaded workers a client that stops half-way through a request holds a thread until
it goes away, so a handful of stalled clients can leave no thread for ``GET /ping`` and SageMaker
takes the container for dead. Here the request, headers and body, is read in the worker's event
loop, where a slow client costs a coroutine and nothing else; a body has ``read_timeout`` seconds
to arrive (else 408). Only a complete request reaches the app, in a thread of a pool of ``threads``.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _Gone(Exception):
    """The client disconnected before its request was complete."""


class _TooLarge(Exception):
    """The body is longer than the app takes."""


def _reply(status: int, message: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = (json.dumps({"error": message}) + "\n").encode()
    return status, [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")], body


class WSGIOnAsyncio:
    """An ASGI app that runs ``app`` (WSGI) once each request has fully arrived.

    Parameters
    ----------
    app : WSGI callable
    threads : int
        Requests the app handles at once.
    read_timeout : float
        Seconds a client has to send its whole body; longer gets 408 and the connection closed.
    max_body : int
        Bytes a body may have; longer gets 413 (``too_large``, the app's own message) without being
        read to the end.
    too_large : str
    """

    def __init__(self, app: WSGIApp, threads: int, read_timeout: float, max_body: int, too_large: str) -> None:
        self.app = app
        self.read_timeout = read_timeout
        self.max_body = max_body
        self.too_large = too_large
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="serve")  # its threads start with the first request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.pool.shutdown(wait=True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _body(self, receive: Receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Gone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", [])]
        declared = next((v for k, v in headers if k == "content-length"), "")
        try:
            if declared.strip().isdigit() and int(declared) > self.max_body:
                raise _TooLarge
            body = await asyncio.wait_for(self._body(receive), self.read_timeout)
        except _Gone:
            return
        except _TooLarge:
            await self._send(send, *_reply(413, self.too_large))
            return
        except TimeoutError:
            await self._send(send, *_reply(408, f"the request body did not arrive within {self.read_timeout:g} s"))
            return
        environ = _environ(scope, headers, body)
        reply = await asyncio.get_running_loop().run_in_executor(self.pool, self._run, environ)
        await self._send(send, *reply)

    def _run(self, environ: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Call the app in a pool thread: its status, headers and whole body."""
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
            if exc_info and started:
                raise exc_info[1].with_traceback(exc_info[2])
            started[:] = [status, headers]
            return lambda data: None  # the legacy write() callable: serve's app never uses it

        result = self.app(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        status, headers = started
        return int(status.split(" ", 1)[0]), [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers], body

    @staticmethod
    async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


def _environ(scope: Scope, headers: list[tuple[str, str]], body: bytes) -> dict[str, Any]:
    """The WSGI environ (PEP 3333) of a complete ASGI HTTP request."""
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client") or ("", 0)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", "").encode("utf-8").decode("latin-1"),
        "PATH_INFO": scope["path"].encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": str(client[0]),
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in headers:
        if name == "content-length":
            continue
        key = "CONTENT_TYPE" if name == "content-type" else "HTTP_" + name.upper().replace("-", "_")
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ
