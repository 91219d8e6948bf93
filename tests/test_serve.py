"""The SageMaker inference contract of ``serve``, over HTTP on loopback."""

from __future__ import annotations

import csv
import http.client
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from pipeline.local.transform import serving
from steps import columns as c
from steps.model.model_io import load_model


@pytest.fixture(scope="module")
def port(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with serving(model_dir, tmp_path_factory.mktemp("serve") / "serve.log") as serve_port:
        yield serve_port


def call(port: int, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    return response.status, response.getheader("Content-Type", ""), response.read()


def csv_payload(frame: pd.DataFrame, header: bool) -> bytes:
    return frame[list(c.TRANSFORM_INPUT_COLUMNS)].to_csv(index=False, header=header).encode()


def test_ping_answers_ok(port: int) -> None:
    status, _, body = call(port, "GET", "/ping")
    assert status == 200
    assert json.loads(body)["status"] == "ok"


def test_execution_parameters_ask_for_multi_record(port: int) -> None:
    status, _, body = call(port, "GET", "/execution-parameters")
    assert status == 200
    assert json.loads(body)["BatchStrategy"] == "MULTI_RECORD"


@pytest.mark.parametrize("header", [True, False])
def test_csv_in_jsonlines_out_matches_the_model(port, features_frame, model_dir, header) -> None:
    frame = features_frame.iloc[:50]
    status, content_type, body = call(port, "POST", "/invocations", csv_payload(frame, header),
                                      {"Content-Type": "text/csv", "Accept": "application/jsonlines"})
    assert status == 200, body
    assert content_type.startswith("application/jsonlines")
    records = [json.loads(line) for line in body.decode().splitlines()]
    expected = load_model(model_dir).assign(frame)
    assert [r[c.CUSTOMER_ID] for r in records] == list(frame[c.CUSTOMER_ID])
    assert [r[c.CLUSTER] for r in records] == expected[c.CLUSTER].tolist()
    assert [r[c.CLUSTER_NAME] for r in records] == expected[c.CLUSTER_NAME].tolist()
    assert [r[c.RFM_SEGMENT] for r in records] == list(frame[c.RFM_SEGMENT])
    assert set(records[0]) == set(c.ASSIGNMENT_COLUMNS)


def test_jsonlines_in_csv_out_keeps_ids_exact(port, features_frame) -> None:
    frame = features_frame.iloc[:3].copy()
    frame[c.CUSTOMER_ID] = ["007", " A1", "1e3"]
    body = frame[list(c.TRANSFORM_INPUT_COLUMNS)].to_json(orient="records", lines=True).encode()
    status, content_type, answer = call(port, "POST", "/invocations", body,
                                        {"Content-Type": "application/jsonlines", "Accept": "text/csv"})
    assert status == 200, answer
    assert content_type.startswith("text/csv")
    rows = list(csv.reader(io.StringIO(answer.decode())))
    assert [row[0] for row in rows] == ["007", " A1", "1e3"]
    assert all(len(row) == len(c.ASSIGNMENT_COLUMNS) for row in rows)


def test_ids_needing_json_escapes_round_trip(port, features_frame) -> None:
    frame = features_frame.iloc[:3].copy()
    frame[c.CUSTOMER_ID] = ['say "hi"', "back\\slash", "tab\tid"]
    body = frame[list(c.TRANSFORM_INPUT_COLUMNS)].to_json(orient="records", lines=True).encode()
    status, _, answer = call(port, "POST", "/invocations", body, {"Content-Type": "application/jsonlines"})
    assert status == 200, answer
    assert [json.loads(line)[c.CUSTOMER_ID] for line in answer.decode().splitlines()] == list(frame[c.CUSTOMER_ID])


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (b"customer_id,recency_days\n1,2\n", "text/csv", 400, "lack field"),
        (b"customer_id,recency_days,frequency,monetary,r_score,f_score,m_score\nA,x,1,2,3,3,3\n",
         "text/csv", 400, "recency_days"),
        (b"customer_id,recency_days,frequency,monetary,r_score,f_score,m_score\nA,1,1,2,9,3,3\n",
         "text/csv", 400, "r_score"),
        (b'{"customer_id": "A", "recency_days": 1\n', "application/jsonlines", 400, "JSON"),
        (b"", "text/csv", 400, "CSV"),
        (b"hello", "application/x-npy", 415, "not supported"),
        (b'{"customer_id": "A", "recency_days": " 5", "frequency": 1, "monetary": 2, "r_score": 3, "f_score": 3}\n',
         "application/jsonlines", 400, "recency_days"),
        (b"customer_id,customer_id,recency_days,frequency,monetary,r_score,f_score,m_score\nA,B,1,1,2,3,3,3\n",
         "text/csv", 400, "more than once"),
    ],
)
def test_bad_payloads_get_a_clear_4xx(port, body, content_type, status, message) -> None:
    answer_status, _, answer = call(port, "POST", "/invocations", body, {"Content-Type": content_type})
    assert answer_status == status
    assert message in json.loads(answer)["error"]


def test_a_six_megabyte_mini_batch_is_accepted(port, features_frame) -> None:
    frame = pd.concat([features_frame] * 200, ignore_index=True)
    payload = csv_payload(frame, header=False)
    while len(payload) < 6 * 1024 * 1024 - 100_000:
        payload += payload[: 6 * 1024 * 1024 - len(payload) - 50_000].rsplit(b"\n", 1)[0] + b"\n"
    status, _, answer = call(port, "POST", "/invocations", payload, {"Content-Type": "text/csv"})
    assert status == 200
    assert len(answer.decode().splitlines()) == payload.count(b"\n")


HEADER = ",".join(c.TRANSFORM_INPUT_COLUMNS).encode()


def _row(customer: str = "A", recency: str = "1", frequency: str = "1", monetary: str = "2") -> bytes:
    return f"{customer},{recency},{frequency},{monetary},3,3,3".encode()


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (HEADER + b"\n" + _row(recency="-1") + b"\n", "text/csv", "recency_days=-1 is negative"),
        (HEADER + b"\n" + _row(frequency="-2") + b"\n", "text/csv", "frequency=-2 is negative"),
        (HEADER + b"\n" + _row(recency="inf") + b"\n", "text/csv", "recency_days=inf is not valid"),
        (HEADER + b"\n" + _row(monetary="nan") + b"\n", "text/csv", "record 1: monetary is missing"),
        (HEADER + b"\n" + _row() + b"\n" + _row(customer="  ") + b"\n", "text/csv",
         "record 2 has an empty customer_id"),
        (b'{"customer_id": "", "recency_days": 1, "frequency": 1, "monetary": 2, "r_score": 3, "f_score": 3}\n',
         "application/jsonlines", "record 1 has an empty customer_id"),
        (b'{"customer_id": "A", "recency_days": true, "frequency": 1, "monetary": 2, "r_score": 3, "f_score": 3}\n',
         "application/jsonlines", "recency_days=True is not a JSON number"),
        (b'{"customer_id": "A", "recency_days": 1, "frequency": "4", "monetary": 2, "r_score": 3, "f_score": 3}\n',
         "application/jsonlines", "frequency='4' is not a JSON number"),
        # The header in the wrong place, or none and the wrong number of fields: said plainly.
        (_row() + b"\n" + HEADER + b"\n" + _row() + b"\n", "text/csv",
         "record 2 is a header line; a header may only be the first line"),
        (b"A,1,1,2\nB,1,1,2\n", "text/csv", "no header line (the first line names no column) and it has 4 field(s)"),
    ],
)
def test_invalid_records_get_a_400_saying_what_is_wrong(port, body, content_type, message) -> None:
    status, _, answer = call(port, "POST", "/invocations", body, {"Content-Type": content_type})
    assert status == 400, answer
    assert message in json.loads(answer)["error"]


def test_header_in_any_column_order_is_read_by_name(port, features_frame) -> None:
    frame = features_frame.iloc[:5]
    columns = list(reversed(c.TRANSFORM_INPUT_COLUMNS))
    status, _, answer = call(port, "POST", "/invocations", frame[columns].to_csv(index=False).encode(),
                             {"Content-Type": "text/csv"})
    assert status == 200, answer
    assert [json.loads(line)[c.CUSTOMER_ID] for line in answer.decode().splitlines()] == list(frame[c.CUSTOMER_ID])


def test_ping_answers_while_clients_stall(model_dir: Path, tmp_path: Path) -> None:
    """One worker; clients that stop half-way through a request, or send nothing, do not block /ping."""
    import socket
    import time

    with serving(model_dir, tmp_path / "serve.log", workers=1) as serve_port:
        stalled = []
        for partial in (b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nA,1,",
                        b"GET /ping HTTP/1.1\r\nHost:", b""):
            sock = socket.create_connection(("127.0.0.1", serve_port), timeout=5)
            if partial:
                sock.sendall(partial)
            stalled.append(sock)
        try:
            started = time.monotonic()
            connection = http.client.HTTPConnection("127.0.0.1", serve_port, timeout=5)
            connection.request("GET", "/ping")
            assert connection.getresponse().status == 200
            assert time.monotonic() - started < 5
        finally:
            for sock in stalled:
                sock.close()
