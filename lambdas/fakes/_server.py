"""What the local service fakes share: a WSGI app on a loopback port in a thread, the REST-JSON
error format botocore parses, fault injection, and a small control API.

Control API (besides the service's own paths), for tests and curious users::

    GET  /_fake/state            the fake's state as JSON
    POST /_fake/faults           {"throttle": n, "server_errors": n, "operations": [...],
                                  "fail_records": [keys], "times": k, "deny": [operations]}
    POST /_fake/reset-faults     clear injected faults
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from lambdas.fakes._model import first_violation, operation_model, request_params

CONTROL_PREFIX = "/_fake/"


class ServiceError(Exception):
    """An error response: the service's error code, HTTP status and message."""

    def __init__(self, code: str, status: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message


@dataclass
class Faults:
    """Injected failures. ``throttle`` / ``server_errors``: the next n matching requests fail;
    ``operations`` limits them to those operation names; ``failing_records``: record key -> how
    many more times a per-record operation on it fails; ``denied``: operations refused (403) as
    when the caller's IAM policy lacks them, until the faults are reset."""

    throttle: int = 0
    server_errors: int = 0
    operations: frozenset[str] | None = None
    failing_records: dict[str, int] = field(default_factory=dict)
    denied: frozenset[str] = frozenset()


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:  # no access log on the console
        pass

    def log(self, *args: Any, **kwargs: Any) -> None:
        pass


class FakeService:
    """Base of the fakes: routing, errors, faults, threading.

    Subclasses set the error codes, list their routes as ``(path, method, operation)`` and
    implement ``op_<Operation>(body, query, **path_args) -> (status, payload)``. With ``model_name``
    (a botocore service name) every request is first checked against the operation's input shape
    (required members, lengths, ranges, patterns, enums) and refused with ``bad_request`` as the service does.
    """

    service = "fake"
    model_name: str | None = None
    not_found = ("NotFoundException", 404)
    bad_request = ("BadRequestException", 400)
    throttle_error = ("TooManyRequestsException", 429)
    server_error = ("InternalServerErrorException", 500)
    record_error = ("BadRequestException", 400)
    access_denied = ("AccessDeniedException", 403)
    routes: tuple[tuple[str, str, str], ...] = ()

    def __init__(self, faults: Faults | None = None) -> None:
        self.lock = threading.RLock()
        self.faults = faults or Faults()
        self.calls: Counter[str] = Counter()
        self.url_map = Map(
            [
                Rule(path, methods=[method], endpoint=operation, strict_slashes=False)
                for path, method, operation in self.routes
            ]
        )
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    # -- faults --------------------------------------------------------------------------------
    def inject(
        self,
        throttle: int = 0,
        server_errors: int = 0,
        operations: Iterable[str] | None = None,
        fail_records: Iterable[str] = (),
        times: int = 1,
        deny: Iterable[str] = (),
    ) -> None:
        """Make the next ``throttle`` (429) / ``server_errors`` (5xx) requests fail, optionally only
        for ``operations``; make each record in ``fail_records`` fail ``times`` times; refuse every
        call of the operations in ``deny`` (``access_denied``, 403) until :meth:`reset_faults`."""
        with self.lock:
            self.faults.denied |= frozenset(deny)
            self.faults.throttle += throttle
            self.faults.server_errors += server_errors
            self.faults.operations = frozenset(operations) if operations else self.faults.operations
            for key in fail_records:
                self.faults.failing_records[str(key)] = times

    def reset_faults(self) -> None:
        with self.lock:
            self.faults = Faults()

    def _request_fault(self, operation: str) -> ServiceError | None:
        with self.lock:
            faults = self.faults
            if operation in faults.denied:
                return ServiceError(*self.access_denied, f"User is not authorized to perform {operation} "
                                    "(denied by the fake)")
            if faults.operations is not None and operation not in faults.operations:
                return None
            if faults.throttle > 0:
                faults.throttle -= 1
                return ServiceError(*self.throttle_error, "Rate exceeded (injected by the fake)")
            if faults.server_errors > 0:
                faults.server_errors -= 1
                return ServiceError(*self.server_error, "Internal error (injected by the fake)")
        return None

    def record_fails(self, *keys: str | None) -> bool:
        """True (and one failure used up) when any of ``keys`` is set to fail."""
        with self.lock:
            for key in keys:
                if key is not None and self.faults.failing_records.get(key, 0) > 0:
                    self.faults.failing_records[key] -= 1
                    return True
        return False

    # -- HTTP ----------------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        try:
            if request.path.startswith(CONTROL_PREFIX):
                status, payload = self._control(request)
            else:
                status, payload = self._dispatch(request)
            response = Response(
                json.dumps(payload, default=str), status=status, content_type="application/json"
            )
        except ServiceError as error:
            response = Response(
                json.dumps(
                    {"Message": error.message, "message": error.message, "RequestID": str(uuid.uuid4())}
                ),
                status=error.status,
                content_type="application/json",
                headers={"x-amzn-ErrorType": error.code},
            )
        response.headers["x-amzn-RequestId"] = str(uuid.uuid4())
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> tuple[int, Any]:
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            operation, path_args = adapter.match()
        except NotFound:
            raise ServiceError(
                *self.not_found, f"No such resource: {request.method} {request.path}"
            ) from None
        except MethodNotAllowed:
            raise ServiceError("MethodNotAllowedException", 405, f"{request.method} not allowed") from None
        if "authorization" not in request.headers:
            raise ServiceError("MissingAuthenticationTokenException", 403, "Missing Authentication Token")
        with self.lock:
            self.calls[operation] += 1
        fault = self._request_fault(operation)
        if fault is not None:
            raise fault
        body: Any = {}
        if request.get_data():
            try:
                body = json.loads(request.get_data())
            except json.JSONDecodeError:
                raise ServiceError(*self.bad_request, "The request body is not valid JSON") from None
        if self.model_name is not None:
            model = operation_model(self.model_name, operation)
            raw_path = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or request.path
            params = request_params(model, raw_path.split("?")[0], request.args, body)
            problem = first_violation(model.input_shape, params)
            if problem:
                raise ServiceError(*self.bad_request, f"1 validation error detected: {problem}")
        return getattr(self, f"op_{operation}")(body, request.args, **path_args)

    def _control(self, request: Request) -> tuple[int, Any]:
        action = request.path[len(CONTROL_PREFIX) :].strip("/")
        if action == "state" and request.method == "GET":
            return 200, self.state()
        if action == "faults" and request.method == "POST":
            spec = json.loads(request.get_data() or b"{}")
            self.inject(
                throttle=int(spec.get("throttle", 0)),
                server_errors=int(spec.get("server_errors", 0)),
                operations=spec.get("operations"),
                fail_records=spec.get("fail_records", []),
                times=int(spec.get("times", 1)),
                deny=spec.get("deny", []),
            )
            return 200, {"ok": True}
        if action == "reset-faults" and request.method == "POST":
            self.reset_faults()
            return 200, {"ok": True}
        raise ServiceError(*self.not_found, f"No control action {request.method} {action}")

    def state(self) -> dict[str, Any]:
        """Everything the fake holds, JSON-able (subclasses add their resources)."""
        return {"calls": dict(self.calls)}

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0: a free port) in a daemon thread; returns the base URL."""
        self._server = make_server(host, port, self, threaded=True, request_handler=_QuietHandler)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-{self.service}",
            daemon=True,
        )
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake is not running")
        return f"http://{self._server.host}:{self._server.server_port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> FakeService:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def require(condition: bool, message: str, error: tuple[str, int] = ("BadRequestException", 400)) -> None:
    """Raise the service's validation error unless ``condition``."""
    if not condition:
        raise ServiceError(error[0], error[1], message)
