"""``serve`` (``rfm-serve``): the SageMaker inference contract for batch transform.

``GET /ping`` answers 200 once the model is loaded; ``POST /invocations``
takes CSV (with or without the header) or JSON Lines of customer features
(``steps.columns.TRANSFORM_INPUT_COLUMNS``) and answers one record per
customer: ``customer_id, cluster, cluster_name, rfm_segment``, as JSON Lines
(default) or CSV (``Accept: text/csv``). Bad payloads get a 4xx with a clear
message. Flask app served by gunicorn's asyncio worker on port 8080 (``SAGEMAKER_BIND_TO_PORT``):
each request is read in the event loop (:mod:`steps.model.wsgi_bridge`), then scored in a thread.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from dataclasses import dataclass
from json.encoder import encode_basestring
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
from flask import Flask, Response, request

from steps import columns as c
from steps import paths
from steps.errors import RFMError, first_line
from steps.model.model_io import SegmentModel, load_model
from steps.model.wsgi_bridge import WSGIOnAsyncio
from steps.segments import SEGMENT_NAME_ARRAY, SEGMENT_NAMES, segment_codes

MAX_PAYLOAD_MB = 6
MAX_REQUEST_MB = 100
CSV_TYPES = {"text/csv", "application/csv"}
JSONL_TYPES = {"application/jsonlines", "application/x-jsonlines", "application/json-lines", "application/jsonl"}
NEEDED = (c.CUSTOMER_ID, *c.MODEL_FEATURES, c.R_SCORE, c.F_SCORE)
NUMERIC = (*c.MODEL_FEATURES, c.R_SCORE, c.F_SCORE)
KNOWN_COLUMNS = frozenset((*c.TRANSFORM_INPUT_COLUMNS, *NEEDED))
NEVER_NEGATIVE = (c.RECENCY_DAYS, c.FREQUENCY)  # days since the last purchase, orders: monetary may be < 0
# Requests scored at once per gunicorn worker; requests still arriving wait in its event loop.
DEFAULT_THREADS = 8
# Seconds a client has to send a whole request body (then 408): SageMaker's agent sends a few MB at once.
DEFAULT_READ_TIMEOUT = 60.0
TOO_LARGE = (f"payload too large; split into mini-batches of at most {MAX_PAYLOAD_MB} MB "
             f"(requests are capped at {MAX_REQUEST_MB} MB)")


class PayloadError(ValueError):
    """A request the client must fix (answered with 4xx)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _media_type(header: str | None, default: str) -> str:
    return (header or default).split(";")[0].strip().lower() or default


def _fields(line: bytes) -> list[str]:
    return [field.strip().strip('"') for field in line.decode("utf-8", "replace").split(",")]


def parse_csv(body: bytes) -> pa.Table:
    """CSV records, with a header line first or in ``TRANSFORM_INPUT_COLUMNS`` order.

    A first line that names any known column is the header (columns in any order). Without one,
    every line must have the columns in ``TRANSFORM_INPUT_COLUMNS`` order; a line that looks like a
    header anywhere else is refused as such, rather than as a number that does not parse.
    """
    first = body.split(b"\n", 1)[0].strip().lstrip(b"\xef\xbb\xbf")
    fields = _fields(first)
    has_header = any(field in KNOWN_COLUMNS for field in fields)
    if not has_header and first and len(fields) != len(c.TRANSFORM_INPUT_COLUMNS):
        raise PayloadError(
            f"no header line (the first line names no column) and it has {len(fields)} field(s); send a header "
            f"line first, or exactly these {len(c.TRANSFORM_INPUT_COLUMNS)} in this order: "
            f"{','.join(c.TRANSFORM_INPUT_COLUMNS)}"
        )
    names = None if has_header else list(c.TRANSFORM_INPUT_COLUMNS)
    options = pacsv.ReadOptions(column_names=names, autogenerate_column_names=False)
    convert = pacsv.ConvertOptions(column_types={c.CUSTOMER_ID: pa.string()}, strings_can_be_null=False)
    try:
        table = pacsv.read_csv(io.BytesIO(body), read_options=options, convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise PayloadError(f"unreadable CSV: {first_line(error)}") from None
    if c.CUSTOMER_ID in table.column_names:
        ids = table.column(table.column_names.index(c.CUSTOMER_ID))  # the first, if the header repeats it
        repeated = pc.index(ids, c.CUSTOMER_ID).as_py()
        if repeated >= 0:
            raise PayloadError(
                f"record {repeated + 1} is a header line; a header may only be the first line of a request"
            )
    return table


def parse_jsonlines(body: bytes) -> pa.Table:
    """JSON Lines records, one object per line."""
    schema = pa.schema([(c.CUSTOMER_ID, pa.string())])
    options = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer")
    try:
        table = pajson.read_json(io.BytesIO(body), parse_options=options)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise PayloadError(f"unreadable JSON Lines: {first_line(error)}") from None
    for name in NUMERIC:  # JSON says what a number is: "12" or true is not one
        if name in table.column_names:
            column = table[name]
            if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
                    or pa.types.is_null(column.type)):
                row = next(i for i, v in enumerate(column.to_pylist()) if v is not None)
                raise PayloadError(f"record {row + 1}: {name}={column[row].as_py()!r} is not a JSON number")
    return table


@dataclass(frozen=True)
class Records:
    """Validated records: ids as text, model features as floats, R and F scores as ints."""

    ids: pa.Array
    features: np.ndarray
    r_scores: np.ndarray
    f_scores: np.ndarray


def _floats(table: pa.Table, name: str) -> np.ndarray:
    column = table[name]
    try:
        column = pc.cast(column, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raw = column.to_pylist()
        row = next(i for i, v in enumerate(raw) if _not_a_number(v))
        raise PayloadError(f"record {row + 1}: {name}={raw[row]!r} is not a number") from None
    return column.to_numpy(zero_copy_only=False).astype(float, copy=False)


def _not_a_number(value: object) -> bool:
    """Whether Arrow's cast (the one the batch path uses) refuses ``value`` as a float."""
    try:
        pc.cast(pa.array([value]), pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return True
    return False


def validate(table: pa.Table) -> Records:
    """Check the records have every needed column with usable values."""
    repeated = sorted({n for n in table.column_names if table.column_names.count(n) > 1})
    if repeated:
        raise PayloadError(f"field(s) {', '.join(repeated)} appear more than once")
    missing = [name for name in NEEDED if name not in table.column_names]
    if missing:
        raise PayloadError(f"records lack field(s) {', '.join(missing)}; send {', '.join(NEEDED)}")
    ids = table[c.CUSTOMER_ID]
    if ids.null_count:
        raise PayloadError(f"record {ids.to_pylist().index(None) + 1} has no customer_id")
    blank = pc.equal(pc.utf8_trim_whitespace(ids), "")
    if pc.any(blank).as_py():
        raise PayloadError(f"record {pc.index(blank, True).as_py() + 1} has an empty customer_id")
    values = {name: _floats(table, name) for name in NUMERIC}
    for name, column in values.items():
        bad = ~np.isfinite(column)
        if name in (c.R_SCORE, c.F_SCORE):
            bad |= (column < 1) | (column > 5) | (column != np.round(column))
        if bad.any():
            row = int(bad.argmax())
            value = table[name][row].as_py()
            if value is None:  # empty, or a CSV null such as NaN
                raise PayloadError(f"record {row + 1}: {name} is missing")
            expected = "a whole number 1-5" if name in (c.R_SCORE, c.F_SCORE) else "a finite number"
            raise PayloadError(f"record {row + 1}: {name}={value!r} is not valid ({expected})")
        if name in NEVER_NEGATIVE and (column < 0).any():
            row = int((column < 0).argmax())
            raise PayloadError(f"record {row + 1}: {name}={table[name][row].as_py()!r} is negative")
    features = np.column_stack([values[name] for name in c.MODEL_FEATURES])
    return Records(ids.combine_chunks(), features, values[c.R_SCORE].astype(int), values[c.F_SCORE].astype(int))


def render(records: Records, clusters: np.ndarray, model: SegmentModel, accept: str) -> tuple[bytes, str]:
    """Records as JSON Lines or headerless CSV (what batch transform assembles by line)."""
    segments = segment_codes(records.r_scores, records.f_scores)
    if accept in CSV_TYPES:
        table = pa.table({
            c.CUSTOMER_ID: records.ids,
            c.CLUSTER: pa.array(clusters, pa.int64()),
            c.CLUSTER_NAME: pa.array(np.asarray(model.names, dtype=object)[clusters], pa.string()),
            c.RFM_SEGMENT: pa.array(SEGMENT_NAME_ARRAY[segments], pa.string()),
        })
        sink = io.BytesIO()
        pacsv.write_csv(table, sink, write_options=pacsv.WriteOptions(include_header=False))
        return sink.getvalue(), "text/csv"
    # Every line is '{"customer_id": "<id>"' + one of k x 10 precomputed tails, joined in Arrow.
    tails = pa.array([
        f', "{c.CLUSTER}": {k}, "{c.CLUSTER_NAME}": {json.dumps(name, ensure_ascii=False)}, '
        f'"{c.RFM_SEGMENT}": {json.dumps(segment, ensure_ascii=False)}}}\n'
        for k, name in enumerate(model.names) for segment in SEGMENT_NAMES
    ])
    codes = pa.array(clusters * len(SEGMENT_NAMES) + segments)
    lines = pc.binary_join_element_wise(f'{{"{c.CUSTOMER_ID}": ', _json_strings(records.ids), tails.take(codes), "")
    return _concatenated(lines), "application/jsonlines"


def _concatenated(strings: pa.Array) -> bytes:
    """All values of a string array back to back, straight from its data buffer."""
    if not len(strings):
        return b""
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int32, count=len(strings) + 1, offset=strings.offset * 4)
    return strings.buffers()[2].to_pybytes()[offsets[0]:offsets[-1]]


def _json_strings(ids: pa.Array) -> pa.Array:
    """Each id as a JSON string literal; only ids with quotes, backslashes or controls need escaping."""
    if pc.any(pc.match_substring_regex(ids, r'["\\\x00-\x1f]')).as_py():
        return pa.array([encode_basestring(i) for i in ids.to_pylist()], pa.string())
    return pc.binary_join_element_wise('"', ids, '"', "")


def predict(model: SegmentModel, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
    """The whole invocation: parse, validate, assign, render."""
    if accept not in CSV_TYPES | JSONL_TYPES | {"*/*", "application/json"}:
        raise PayloadError(f"cannot answer as {accept!r}; accept text/csv or application/jsonlines", 406)
    if content_type in CSV_TYPES:
        table = parse_csv(body)
    elif content_type in JSONL_TYPES or content_type == "application/json":
        table = parse_jsonlines(body)
    else:
        raise PayloadError(
            f"content type {content_type!r} is not supported; send text/csv or application/jsonlines", 415
        )
    records = validate(table)
    return render(records, model.clusters(records.features), model, accept)


def create_app(model: SegmentModel | None = None) -> Flask:
    """The Flask app; loads the model from ``SM_MODEL_DIR`` unless given one."""
    model = model or load_model(paths.model_dir())
    app = Flask("rfm-serve")
    # Batch transform sends at most MaxPayloadInMB (6 here); 100 MB is SageMaker's ceiling for any request.
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_MB * 1024 * 1024

    @app.get("/ping")
    def ping() -> Response:
        return Response(json.dumps({"status": "ok", "k": model.k}), 200, mimetype="application/json")

    @app.get("/execution-parameters")
    def execution_parameters() -> Response:
        body = {"MaxConcurrentTransforms": workers(), "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": MAX_PAYLOAD_MB}
        return Response(json.dumps(body), 200, mimetype="application/json")

    @app.post("/invocations")
    def invocations() -> Response:
        content_type = _media_type(request.headers.get("Content-Type"), "text/csv")
        accept = _media_type(request.headers.get("Accept"), "application/jsonlines")
        if accept in {"*/*", "application/json"}:
            accept = "application/jsonlines"
        try:
            body, mimetype = predict(model, request.get_data(), content_type, accept)
        except PayloadError as error:
            return Response(json.dumps({"error": str(error)}) + "\n", error.status, mimetype="application/json")
        return Response(body, 200, mimetype=mimetype)

    @app.errorhandler(413)
    def too_large(_error) -> Response:
        return Response(json.dumps({"error": TOO_LARGE}) + "\n", 413, mimetype="application/json")

    return app


def workers() -> int:
    return int(os.environ.get("SAGEMAKER_MODEL_SERVER_WORKERS", os.cpu_count() or 1))


def main(argv: list[str] | None = None) -> int:
    """Serve with gunicorn (SageMaker runs ``serve`` with no arguments)."""
    from gunicorn.app.base import BaseApplication

    from steps.cli_support import guarded

    parser = argparse.ArgumentParser(prog="rfm-serve", description="Serve the segmenter (SageMaker contract).")
    parser.add_argument("serve", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", default=None, help="model folder or model.tar.gz (default: SM_MODEL_DIR)")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SAGEMAKER_BIND_TO_PORT", 8080)))
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--threads", type=int, default=os.environ.get("RFM_SERVE_THREADS", str(DEFAULT_THREADS)),
                        help=f"requests scored at once per worker (default {DEFAULT_THREADS}, or RFM_SERVE_THREADS)")
    parser.add_argument("--read-timeout", type=float,
                        default=os.environ.get("RFM_SERVE_READ_TIMEOUT", str(DEFAULT_READ_TIMEOUT)),
                        help=f"seconds a client has to send a request body, else 408 (default "
                             f"{DEFAULT_READ_TIMEOUT:g}, or RFM_SERVE_READ_TIMEOUT)")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)

    class Server(BaseApplication):
        def __init__(self, app: WSGIOnAsyncio) -> None:
            self.application = app
            super().__init__()

        def load_config(self) -> None:
            self.cfg.set("bind", f"{args.host}:{args.port}")
            self.cfg.set("workers", args.workers or workers())
            # gunicorn's asyncio worker reads each request in its event loop (WSGIOnAsyncio): clients
            # that stall half-way through a request cost no thread, so /ping always answers.
            self.cfg.set("worker_class", "steps.model.serve_worker.PromptASGIWorker")
            self.cfg.set("asgi_lifespan", "on")
            self.cfg.set("timeout", int(os.environ.get("SAGEMAKER_MODEL_SERVER_TIMEOUT", 600)))
            self.cfg.set("keepalive", 5)
            self.cfg.set("accesslog", None)
            # No runtime control socket ($HOME/.gunicorn/gunicorn.ctl): nothing manages serve at run time,
            # and the local runner's several serve processes would share that one path.
            self.cfg.set("control_socket_disable", True)

        def load(self) -> WSGIOnAsyncio:
            return self.application

    def run() -> int:
        if args.threads < 1:
            raise RFMError(f"--threads {args.threads} is not a number of threads", "rfm-serve",
                           "Pass 1 or more (or set RFM_SERVE_THREADS)")
        if not args.read_timeout > 0:
            raise RFMError(f"--read-timeout {args.read_timeout:g} is not a number of seconds", "rfm-serve",
                           "Pass a positive number (or set RFM_SERVE_READ_TIMEOUT)")
        model = load_model(Path(args.model_dir)) if args.model_dir else load_model(paths.model_dir())
        app = WSGIOnAsyncio(create_app(model), args.threads, args.read_timeout, MAX_REQUEST_MB * 1024 * 1024,
                            TOO_LARGE)
        Server(app).run()
        return 0

    return guarded(run, args.debug)


if __name__ == "__main__":
    sys.exit(main())
