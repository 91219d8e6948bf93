"""The SageMaker inference contract of ``serve``, over HTTP on loopback."""

from __future__ import annotations

import csv
import http.client
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from pipeline.local.transform import serving
from steps import columns as c
from steps.model.model_io import load_model
from steps.model.serve import PayloadError, create_app, validate


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


HEADER = b"customer_id,recency_days,frequency,monetary,r_score,f_score,m_score\n"


@pytest.fixture(scope="module")
def client(model_dir: Path):
    """The same app in this process (Flask's test client), so that every check is seen by coverage and mutmut."""
    return create_app(load_model(model_dir)).test_client()


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (b"customer_id,recency_days\n1,2\n", "text/csv", 400,
         "records lack field(s) frequency, monetary, r_score, f_score; "
         "send customer_id, recency_days, frequency, monetary, r_score, f_score"),
        (HEADER + b"A,x,1,2,3,3,3\n", "text/csv", 400, "record 1: recency_days='x' is not a number"),
        (HEADER + b"A,1,1,2,3,3,3\nB,1,1,2,9,3,3\n", "text/csv", 400, "record 2: r_score=9 is not valid"),
        (HEADER + b"A,1,1,2,3,3,3\nB,1,1,2,3,0,3\n", "text/csv", 400, "record 2: f_score=0 is not valid"),
        (HEADER + b"A,1,1,2,3,2.5,3\n", "text/csv", 400, "record 1: f_score=2.5 is not valid"),
        (HEADER + b",1,1,2,3,3,3\n", "text/csv", 400, "record 1 has an empty customer_id"),
        (b'{"customer_id": null, "recency_days": 1, "frequency": 1, "monetary": 2, "r_score": 3, "f_score": 3}\n',
         "application/jsonlines", 400, "record 1 has no customer_id"),
        (b'{"customer_id": "A", "recency_days": 1\n', "application/jsonlines", 400, "unreadable JSON Lines"),
        (b"", "text/csv", 400, "unreadable CSV"),
        (b"hello", "application/x-npy", 415, "content type 'application/x-npy' is not supported"),
        (b'{"customer_id": "A", "recency_days": " 5", "frequency": 1, "monetary": 2, "r_score": 3, "f_score": 3}\n',
         "application/jsonlines", 400, "record 1: recency_days=' 5' is not a JSON number"),
        (b"customer_id,customer_id,recency_days,frequency,monetary,r_score,f_score,m_score\nA,B,1,1,2,3,3,3\n",
         "text/csv", 400, "field(s) customer_id appear more than once"),
    ],
)
def test_bad_payloads_get_a_clear_4xx(client, body, content_type, status, message) -> None:
    answer = client.post("/invocations", data=body, headers={"Content-Type": content_type})
    assert answer.status_code == status, answer.get_data()
    if message is not None:
        assert answer.content_type == "application/json"
        assert json.loads(answer.get_data())["error"].startswith(message)


def test_in_process_answers_match_the_model(client, features_frame, model_dir) -> None:
    frame = features_frame.iloc[:60]
    answer = client.post("/invocations", data=csv_payload(frame, header=True), headers={"Content-Type": "text/csv"})
    assert answer.status_code == 200, answer.get_data()
    records = [json.loads(line) for line in answer.get_data(as_text=True).splitlines()]
    expected = load_model(model_dir).assign(frame)
    assert [r[c.CLUSTER] for r in records] == expected[c.CLUSTER].tolist()
    assert [r[c.RFM_SEGMENT] for r in records] == list(frame[c.RFM_SEGMENT])


def test_an_unanswerable_accept_is_a_406(client) -> None:
    answer = client.post("/invocations", data=HEADER + b"A,1,1,2,3,3,3\n",
                         headers={"Content-Type": "text/csv", "Accept": "image/png"})
    assert answer.status_code == 406 and "image/png" in json.loads(answer.get_data())["error"]


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
def test_invalid_records_get_a_400_saying_what_is_wrong(client, body, content_type, message) -> None:
    """In process (the app ``serve`` runs); the real server's JSON 400 is checked over HTTP below."""
    answer = client.post("/invocations", data=body, headers={"Content-Type": content_type})
    assert answer.status_code == 400, answer.get_data()
    assert answer.content_type == "application/json"
    assert message in json.loads(answer.get_data())["error"]


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
            connection.close()
        finally:
            for sock in stalled:
                sock.close()


def one_record(**values: object) -> dict[str, object]:
    return {c.CUSTOMER_ID: "A", c.RECENCY_DAYS: 10, c.FREQUENCY: 2, c.MONETARY: 50.0,
            c.R_SCORE: 3, c.F_SCORE: 3, c.M_SCORE: 3, **values}


def table(*records: dict[str, object]) -> pa.Table:
    """Records as the parsers give them: ids as text, numbers as float64 columns."""
    return pa.table({name: pa.array([r[name] for r in records], pa.string() if name == c.CUSTOMER_ID
                                    else pa.float64()) for name in records[0]})


BAD_SCORES = [0, 6, 9, -1, 2.5, 4.0001, float("nan"), float("inf")]


@pytest.mark.parametrize("name", [c.R_SCORE, c.F_SCORE])
@pytest.mark.parametrize("value", BAD_SCORES)
def test_scores_outside_1_to_5_or_not_whole_are_refused(name: str, value: float) -> None:
    """Both scores the segment grid reads must be whole numbers in 1..5; anything else is the client's error."""
    with pytest.raises(PayloadError, match=f"record 1: {name}=.* is not valid"):
        validate(table(one_record(**{name: value})))


@pytest.mark.parametrize("name", [c.R_SCORE, c.F_SCORE])
def test_whole_scores_given_as_decimals_are_accepted(name: str) -> None:
    records = validate(table(one_record(**{name: 5.0}), one_record(**{name: 1})))
    assert getattr(records, name.replace("score", "scores")).tolist() == [5, 1]


@pytest.mark.parametrize("name", [c.RECENCY_DAYS, c.FREQUENCY, c.MONETARY])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_features_must_be_finite(name: str, value: float) -> None:
    with pytest.raises(PayloadError, match=f"record 1: {name}="):
        validate(table(one_record(**{name: value})))


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([one_record(), one_record(**{c.MONETARY: None})], "record 2: monetary is missing"),
        ([one_record(), one_record(), one_record(**{c.R_SCORE: None})], "record 3: r_score is missing"),
        ([one_record(), one_record(**{c.MONETARY: float("inf")})],
         "record 2: monetary=inf is not valid (a finite number)"),
        ([one_record(), one_record(**{c.F_SCORE: 6})], "record 2: f_score=6.0 is not valid (a whole number 1-5)"),
        ([one_record(**{c.RECENCY_DAYS: 0}), one_record(), one_record(**{c.RECENCY_DAYS: -1})],
         "record 3: recency_days=-1.0 is negative"),  # not the valid 0 before it
        ([one_record(), one_record(**{c.FREQUENCY: -0.5})], "record 2: frequency=-0.5 is negative"),
    ],
)
def test_each_refusal_names_its_record_field_and_rule(records: list[dict[str, object]], message: str) -> None:
    """The whole message: the record's position (from 1), the field, its value and what is expected."""
    with pytest.raises(PayloadError) as refused:
        validate(table(*records))
    assert str(refused.value) == message


def test_zero_days_and_a_negative_spend_are_valid() -> None:
    """A purchase today is recency 0; refunds can leave a customer's spend below zero (only days and orders
    are never negative)."""
    records = validate(table(one_record(**{c.RECENCY_DAYS: 0, c.FREQUENCY: 0}), one_record(**{c.MONETARY: -20.0})))
    assert records.features.tolist() == [[0.0, 0.0, 50.0], [10.0, 2.0, -20.0]]


def test_the_bad_record_is_named_by_its_position() -> None:
    with pytest.raises(PayloadError, match="record 3: f_score=7.0 is not valid"):
        validate(table(one_record(), one_record(), one_record(**{c.F_SCORE: 7})))


def test_a_bad_f_score_over_http_is_a_json_400(port) -> None:
    body = (json.dumps(one_record(**{c.F_SCORE: 9})) + "\n").encode()
    status, content_type, answer = call(port, "POST", "/invocations", body, {"Content-Type": "application/jsonlines"})
    assert status == 400 and content_type.startswith("application/json")
    assert "f_score=9" in json.loads(answer)["error"]


def test_a_value_that_is_not_a_number_is_named_by_its_record() -> None:
    """Text where a number belongs (the CSV path gives every column as text): the first such record is named."""
    text = pa.table({name: pa.array(["A", "B", "C"] if name == c.CUSTOMER_ID else
                                    ["3", "7", "x"] if name == c.MONETARY else ["1", "2", "3"])
                     for name in one_record()})
    with pytest.raises(PayloadError, match="^record 3: monetary='x' is not a number$"):
        validate(text)


def test_every_repeated_field_is_named() -> None:
    record = one_record()
    names = [*record, c.R_SCORE, c.MONETARY]
    repeated = pa.Table.from_arrays([pa.array([record[n]]) for n in names], names=names)
    with pytest.raises(PayloadError, match=r"^field\(s\) monetary, r_score appear more than once$"):
        validate(repeated)


def test_ping_and_scoring_answer_while_more_clients_stall_than_there_are_threads(
        model_dir: Path, tmp_path: Path, features_frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests are read in the event loop: 10 stalled clients and 2 scoring threads leave /ping and
    /invocations answering at once, and each stalled body gets a 408 when its time is up."""
    import socket
    import time

    monkeypatch.setenv("RFM_SERVE_THREADS", "2")
    monkeypatch.setenv("RFM_SERVE_READ_TIMEOUT", "5")
    with serving(model_dir, tmp_path / "serve.log", workers=1) as serve_port:
        stalled = []
        for number in range(10):
            sock = socket.create_connection(("127.0.0.1", serve_port), timeout=15)
            sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nA,1,"
                         if number % 2 else b"GET /ping HTTP/1.1\r\nHost:")
            stalled.append(sock)
        try:
            started = time.monotonic()
            status, _, body = call(serve_port, "GET", "/ping")
            assert status == 200
            status, _, answer = call(serve_port, "POST", "/invocations", csv_payload(features_frame.iloc[:20], True),
                                     {"Content-Type": "text/csv"})
            assert status == 200 and len(answer.decode().splitlines()) == 20
            assert time.monotonic() - started < 4.5  # before any stalled body's time is up (5 s)
            replies = [sock.recv(4096).decode() for sock in stalled[1::2]]
            assert all(reply.startswith("HTTP/1.1 408") for reply in replies), replies
            assert all('"the request body did not arrive within 5 s"' in reply for reply in replies)
        finally:
            for sock in stalled:
                sock.close()


def test_a_body_over_the_cap_is_refused_before_it_is_sent(port: int) -> None:
    import socket

    from steps.model.serve import TOO_LARGE

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
                     b"Content-Length: 200000000\r\n\r\n")
        reply = sock.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 413")
    assert json.loads(reply.split("\r\n\r\n", 1)[1]) == {"error": TOO_LARGE}


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("RFM_SERVE_THREADS", "0", "rfm-serve: --threads 0 is not a number of threads. Pass 1 or more"),
    ("RFM_SERVE_READ_TIMEOUT", "-1", "rfm-serve: --read-timeout -1 is not a number of seconds"),
    ("RFM_SERVE_THREADS", "many", "argument --threads: invalid int value: 'many'"),
])
def test_bad_server_settings_are_one_line(model_dir: Path, variable: str, value: str, message: str) -> None:
    import subprocess

    from pipeline.local.transform import executable

    done = subprocess.run([executable("serve"), "--model-dir", str(model_dir), "--port", "1"],
                          env={**os.environ, variable: value}, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr
