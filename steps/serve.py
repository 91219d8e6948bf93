"""``serve`` (``rfm-serve``): the SageMaker inference contract for batch transform.

``GET /ping`` answers 200 once the model is loaded; ``POST /invocations``
takes CSV (with or without the header) or JSON Lines of customer features
(``steps.columns.TRANSFORM_INPUT_COLUMNS``) and answers one record per
customer: ``customer_id, cluster, cluster_name, rfm_segment``, as JSON Lines
(default) or CSV (``Accept: text/csv``). Bad payloads get a 4xx with a clear
message. Flask app served by gunicorn on port 8080 (``SAGEMAKER_BIND_TO_PORT``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
from flask import Flask, Response, request

from steps import columns as c
from steps import paths
from steps.model_io import SegmentModel, load_model

MAX_PAYLOAD_MB = 6
CSV_TYPES = {"text/csv", "application/csv"}
JSONL_TYPES = {"application/jsonlines", "application/x-jsonlines", "application/json-lines", "application/jsonl"}
NEEDED = (c.CUSTOMER_ID, *c.MODEL_FEATURES, c.R_SCORE, c.F_SCORE)


class PayloadError(ValueError):
    """A request the client must fix (answered with 4xx)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _media_type(header: str | None, default: str) -> str:
    return (header or default).split(";")[0].strip().lower() or default


def parse_csv(body: bytes) -> pd.DataFrame:
    """CSV records, with the header line or in ``TRANSFORM_INPUT_COLUMNS`` order."""
    first = body.split(b"\n", 1)[0].strip().lstrip(b"\xef\xbb\xbf")
    has_header = first.split(b",")[0].strip(b'"') == c.CUSTOMER_ID.encode()
    names = None if has_header else list(c.TRANSFORM_INPUT_COLUMNS)
    options = pacsv.ReadOptions(column_names=names, autogenerate_column_names=False)
    convert = pacsv.ConvertOptions(column_types={c.CUSTOMER_ID: pa.string()}, strings_can_be_null=False)
    try:
        table = pacsv.read_csv(io.BytesIO(body), read_options=options, convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise PayloadError(f"unreadable CSV: {str(error).splitlines()[0]}") from None
    return table.to_pandas()


def parse_jsonlines(body: bytes) -> pd.DataFrame:
    """JSON Lines records, one object per line."""
    schema = pa.schema([(c.CUSTOMER_ID, pa.string())])
    options = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer")
    try:
        table = pajson.read_json(io.BytesIO(body), parse_options=options)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise PayloadError(f"unreadable JSON Lines: {str(error).splitlines()[0]}") from None
    return table.to_pandas()


def validate(frame: pd.DataFrame) -> pd.DataFrame:
    """Check the records have every needed column with usable values."""
    missing = [name for name in NEEDED if name not in frame.columns]
    if missing:
        raise PayloadError(f"records lack field(s) {', '.join(missing)}; send {', '.join(NEEDED)}")
    if frame[c.CUSTOMER_ID].isna().any():
        raise PayloadError(f"record {int(frame[c.CUSTOMER_ID].isna().to_numpy().argmax()) + 1} has no customer_id")
    for name in (*c.MODEL_FEATURES, c.R_SCORE, c.F_SCORE):
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values)
        if name in (c.R_SCORE, c.F_SCORE):
            bad |= (values < 1) | (values > 5) | (values != np.round(values))
        if bad.any():
            row = int(bad.argmax())
            raise PayloadError(f"record {row + 1}: {name}={frame[name].iloc[row]!r} is not valid")
        frame[name] = values
    return frame


def render(assigned: pd.DataFrame, accept: str) -> tuple[bytes, str]:
    """Records as JSON Lines or headerless CSV (what batch transform assembles by line)."""
    if accept in CSV_TYPES:
        return assigned.to_csv(index=False, header=False).encode(), "text/csv"
    if not len(assigned):
        return b"", "application/jsonlines"
    text = assigned.to_json(orient="records", lines=True, force_ascii=False)
    return (text if text.endswith("\n") else text + "\n").encode(), "application/jsonlines"


def predict(model: SegmentModel, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
    """The whole invocation: parse, validate, assign, render."""
    if accept not in CSV_TYPES | JSONL_TYPES | {"*/*", "application/json"}:
        raise PayloadError(f"cannot answer as {accept!r}; accept text/csv or application/jsonlines", 406)
    if content_type in CSV_TYPES:
        frame = parse_csv(body)
    elif content_type in JSONL_TYPES or content_type == "application/json":
        frame = parse_jsonlines(body)
    else:
        raise PayloadError(
            f"content type {content_type!r} is not supported; send text/csv or application/jsonlines", 415
        )
    return render(model.assign(validate(frame)), accept)


def create_app(model: SegmentModel | None = None) -> Flask:
    """The Flask app; loads the model from ``SM_MODEL_DIR`` unless given one."""
    model = model or load_model(paths.model_dir())
    app = Flask("rfm-serve")
    app.config["MAX_CONTENT_LENGTH"] = 16 * MAX_PAYLOAD_MB * 1024 * 1024

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
        return Response(json.dumps({"error": "payload too large; split into mini-batches of at most "
                                    f"{MAX_PAYLOAD_MB} MB"}) + "\n", 413, mimetype="application/json")

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
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)

    class Server(BaseApplication):
        def __init__(self, app: Flask) -> None:
            self.application = app
            super().__init__()

        def load_config(self) -> None:
            self.cfg.set("bind", f"{args.host}:{args.port}")
            self.cfg.set("workers", args.workers or workers())
            self.cfg.set("timeout", int(os.environ.get("SAGEMAKER_MODEL_SERVER_TIMEOUT", 600)))
            self.cfg.set("accesslog", None)

        def load(self) -> Flask:
            return self.application

    def run() -> int:
        model = load_model(Path(args.model_dir)) if args.model_dir else load_model(paths.model_dir())
        Server(create_app(model)).run()
        return 0

    return guarded(run, args.debug)


if __name__ == "__main__":
    sys.exit(main())
