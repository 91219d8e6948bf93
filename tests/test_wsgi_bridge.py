"""serve's bridge from gunicorn's asyncio worker to the Flask app, in process."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from steps.model.wsgi_bridge import WSGIOnAsyncio


def echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["wsgi.input"].read()
    seen = {key: environ.get(key) for key in ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "CONTENT_LENGTH",
                                          "CONTENT_TYPE", "HTTP_ACCEPT", "HTTP_X_TWICE", "SERVER_PORT")}
    start_response("201 Created", [("Content-Type", "application/json"), ("X-Body", body.decode())])
    return [json.dumps(seen).encode(), b"\n"]


def exchange(bridge: WSGIOnAsyncio, messages: list[dict[str, Any]], headers: list[tuple[bytes, bytes]],
             path: str = "/invocations", delay: float = 0.0) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        if delay:
            await asyncio.sleep(delay)
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "query_string": b"a=1", "headers": headers,
             "server": ("127.0.0.1", 8080), "client": ("127.0.0.1", 5000), "http_version": "1.1"}
    asyncio.run(bridge(scope, receive, send))
    return sent


def test_a_body_in_chunks_reaches_the_app_whole_with_its_headers() -> None:
    bridge = WSGIOnAsyncio(echo, threads=2, read_timeout=5, max_body=100, too_large="too big")
    sent = exchange(bridge, [{"type": "http.request", "body": b"ab", "more_body": True},
                             {"type": "http.request", "body": b"cd", "more_body": False}],
                    [(b"Content-Type", b"text/csv"), (b"accept", b"text/csv"), (b"x-twice", b"1"),
                     (b"x-twice", b"2")], path="/caf\u00e9")
    assert sent[0]["status"] == 201
    assert (b"x-body", b"abcd") in [(k.lower(), v) for k, v in sent[0]["headers"]]
    assert json.loads(sent[1]["body"]) == {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/caf\u00c3\u00a9", "QUERY_STRING": "a=1", "CONTENT_LENGTH": "4",
        "CONTENT_TYPE": "text/csv", "HTTP_ACCEPT": "text/csv", "HTTP_X_TWICE": "1,2", "SERVER_PORT": "8080"}
    assert sent[1]["more_body"] is False


def test_too_large_slow_and_vanished_requests_never_reach_the_app() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise AssertionError("the app was called")

    bridge = WSGIOnAsyncio(app, threads=1, read_timeout=0.2, max_body=3, too_large="too big")
    declared = exchange(bridge, [], [(b"content-length", b"4")])
    streamed = exchange(bridge, [{"type": "http.request", "body": b"ab", "more_body": True},
                                 {"type": "http.request", "body": b"cd", "more_body": False}], [])
    for sent in (declared, streamed):
        assert (sent[0]["status"], json.loads(sent[1]["body"])) == (413, {"error": "too big"})
    slow = exchange(bridge, [{"type": "http.request", "body": b"a", "more_body": True}] * 5, [], delay=0.1)
    assert slow[0]["status"] == 408
    assert json.loads(slow[1]["body"]) == {"error": "the request body did not arrive within 0.2 s"}
    assert (b"connection", b"close") in slow[0]["headers"]
    assert exchange(bridge, [{"type": "http.request", "body": b"a", "more_body": True}], []) == []


def test_exactly_max_body_is_taken_and_lifespan_completes() -> None:
    bridge = WSGIOnAsyncio(echo, threads=1, read_timeout=5, max_body=4, too_large="too big")
    assert exchange(bridge, [{"type": "http.request", "body": b"abcd"}], [(b"content-length", b"4")])[0][
        "status"] == 201
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(bridge({"type": "lifespan"}, receive, send))
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    assert bridge.pool._shutdown


def test_a_stop_signal_wakes_the_workers_main_loop_once_it_serves() -> None:
    """serve's worker: SIGTERM/SIGINT cancel the main loop's one-second sleep (gunicorn then stops as it
    would), but not during start-up, where the cancellation would escape."""
    import pytest

    from steps.model.serve_worker import PromptASGIWorker

    class Main:  # a coroutine named as the worker's main loop is
        async def _serve(self) -> None:
            await asyncio.sleep(60)

    for servers, signal_handler in (([object()], "handle_exit_signal"), ([object()], "handle_quit_signal"),
                                    ([], "handle_exit_signal")):
        worker = object.__new__(PromptASGIWorker)
        loop = asyncio.new_event_loop()
        worker.loop, worker.servers, worker.alive, worker.cfg = loop, servers, True, type(
            "Cfg", (), {"worker_int": staticmethod(lambda w: None)})()
        task = loop.create_task(Main()._serve())
        loop.call_soon(getattr(worker, signal_handler))
        if servers:
            with pytest.raises(asyncio.CancelledError):
                loop.run_until_complete(task)
        else:
            loop.run_until_complete(asyncio.sleep(0.05))
            assert not task.done()  # still starting: left to gunicorn's own tick
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                loop.run_until_complete(task)
        assert worker.alive is False
        loop.close()
