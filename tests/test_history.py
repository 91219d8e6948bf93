"""The incremental history: state, fold, manifest, rebuild, faults (docs/history.md)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steps.errors import InputDataError
from steps.features import compute
from steps.features.fold import run_history
from steps.features.history import HistoryObject, diff, fingerprint, list_history
from steps.features.options import FeatureOptions
from steps.features.sources import find_input_files
from steps.features.state import CURRENT, StateError, StateStore, read_current

HEADER = "customer_id,order_id,timestamp,amount\n"


def _rows(kind: str, name: str, seed: int) -> str:
    """CSV rows of one kind; order ids are unique to the file (an order's lines arrive in one object)."""
    customers = [f"c{(seed * 7 + i) % 9:02d}" for i in range(4)]
    day = 1 + seed % 27
    if kind == "empty":
        return ""
    if kind == "quarantined":  # no customer id, a bad date
        return HEADER + f",{name}-1,2024-03-{day:02d},10\nc01,{name}-2,not a date,5\n"
    if kind == "returns":
        return HEADER + "".join(f"{c},{name}-r{i},2024-04-{day:02d},-{3 + i}\n" for i, c in enumerate(customers))
    lines = []
    for i, customer in enumerate(customers):
        order = f"{name}-{i % 2}"  # two-line orders too
        lines.append(f"{customer},{order},2024-0{1 + (seed + i) % 5}-{day:02d},{5 + seed % 11 + i}.25\n")
    lines.append(lines[0])  # an exact duplicate row
    return HEADER + "".join(lines)


def _write(folder: Path, name: str, text: str, tick: list[int]) -> None:
    path = folder / f"{name}.csv"
    path.write_text(text)
    tick[0] += 1
    os.utime(path, ns=(tick[0] * 10**9, tick[0] * 10**9))  # a new version even within one clock tick


def _features(folder: Path, state: Path, out: Path, rebuild: bool = False) -> tuple[pd.DataFrame, dict]:
    run_history(list_history(str(folder)), StateStore(str(state)), out, FeatureOptions(memory_limit="500MB", threads=1),
                rebuild=rebuild)
    return pd.read_parquet(out / "rfm.parquet"), json.loads((out / "quality.json").read_text())


def _outcome(folder: Path, state: Path, out: Path, rebuild: bool = False):  # noqa: ANN202
    try:
        return _features(folder, state, out, rebuild)
    except InputDataError as error:
        return error.what


operations = st.lists(
    st.tuples(st.sampled_from(["add", "replace", "delete"]), st.integers(0, 4),
              st.sampled_from(["rows", "rows", "rows", "empty", "quarantined", "returns"]), st.integers(0, 50)),
    min_size=1, max_size=6)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=operations)
def test_incremental_equals_rebuild_after_every_step(tmp_path_factory: pytest.TempPathFactory, steps) -> None:  # noqa: ANN001
    root = tmp_path_factory.mktemp("history")
    folder, state = root / "input", root / "state"
    folder.mkdir()
    tick = [0]
    for number, (operation, slot, kind, seed) in enumerate(steps):
        name = f"part-{slot}"
        exists = (folder / f"{name}.csv").exists()
        if operation == "delete" and exists:
            (folder / f"{name}.csv").unlink()
        elif operation != "delete":
            _write(folder, name, _rows(kind, f"{name}v{number}", seed), tick)
        if not any(folder.iterdir()):
            continue
        incremental = _outcome(folder, state, root / f"inc-{number}")
        rebuilt = _outcome(folder, root / f"fresh-{number}", root / f"reb-{number}", rebuild=True)
        if isinstance(rebuilt, str):
            assert incremental == rebuilt
            continue
        assert not isinstance(incremental, str), incremental
        pd.testing.assert_frame_equal(incremental[0], rebuilt[0])
        # one pass, no state
        compute.run(str(folder), root / f"full-{number}", FeatureOptions(memory_limit="500MB", threads=1))
        pd.testing.assert_frame_equal(incremental[0], pd.read_parquet(root / f"full-{number}" / "rfm.parquet"))
        inc_quality, reb_quality = incremental[1], rebuilt[1]
        assert inc_quality["history"] == reb_quality["history"]
        assert inc_quality["customers"] == reb_quality["customers"]
        assert inc_quality["rows_read"] == inc_quality["increment"]["rows_read"]


def _sample(folder: Path, days: int, tick: list[int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for day in range(days):
        _write(folder, f"day-{day:02d}", _rows("rows", f"d{day}", day), tick)


def test_adding_one_object_reads_only_its_rows(tmp_path: Path) -> None:
    tick = [0]
    _sample(tmp_path / "in", 4, tick)
    first = _features(tmp_path / "in", tmp_path / "state", tmp_path / "one")[1]
    assert first["increment"]["objects_added"] == 4 and first["increment"]["rebuild"]
    _write(tmp_path / "in", "day-99", _rows("rows", "d99", 99), tick)
    second = _features(tmp_path / "in", tmp_path / "state", tmp_path / "two")[1]
    assert second["increment"] == {"objects_added": 1, "objects_replaced": 0, "objects_removed": 0,
                                   "objects_unchanged": 4, "objects_redated": 0, "rows_read": 5,
                                   "rebuild": False}
    assert second["rows_read"] == 5 and second["input_files"] == [str((tmp_path / "in" / "day-99.csv").resolve())]
    assert second["history"]["rows_read"] == first["rows_read"] + 5


def test_a_removed_objects_last_purchase_is_recomputed(tmp_path: Path) -> None:
    folder, tick = tmp_path / "in", [0]
    folder.mkdir()
    _write(folder, "old", HEADER + "a,o1,2024-01-05,10\nb,o2,2024-01-06,4\n", tick)
    _write(folder, "new", HEADER + "a,o3,2024-03-09,20\n", tick)
    before = _features(folder, tmp_path / "state", tmp_path / "one")[0].set_index("customer_id")
    assert str(before.loc["a", "last_purchase"])[:10] == "2024-03-09" and before.loc["a", "frequency"] == 2
    (folder / "new.csv").unlink()
    after, quality = _features(folder, tmp_path / "state", tmp_path / "two")
    after = after.set_index("customer_id")
    assert str(after.loc["a", "last_purchase"])[:10] == "2024-01-05" and after.loc["a", "frequency"] == 1
    assert after.loc["a", "monetary"] == 10
    assert quality["increment"]["objects_removed"] == 1 and quality["rows_read"] == 0


def test_an_unchanged_history_keeps_the_generation(tmp_path: Path) -> None:
    tick = [0]
    _sample(tmp_path / "in", 2, tick)
    _features(tmp_path / "in", tmp_path / "state", tmp_path / "one")
    pointer = (tmp_path / "state" / CURRENT).read_text()
    quality = _features(tmp_path / "in", tmp_path / "state", tmp_path / "two")[1]
    assert (tmp_path / "state" / CURRENT).read_text() == pointer
    assert quality["increment"]["objects_unchanged"] == 2 and quality["rows_read"] == 0


def test_an_interrupted_run_never_becomes_current(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tick = [0]
    _sample(tmp_path / "in", 2, tick)
    _features(tmp_path / "in", tmp_path / "state", tmp_path / "one")
    pointer = (tmp_path / "state" / CURRENT).read_text()
    _write(tmp_path / "in", "day-50", _rows("rows", "d50", 50), tick)

    def crash(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
        raise KeyboardInterrupt

    monkeypatch.setattr("steps.features.fold.write_features", crash)
    with pytest.raises(KeyboardInterrupt):
        _features(tmp_path / "in", tmp_path / "state", tmp_path / "two")
    assert (tmp_path / "state" / CURRENT).read_text() == pointer  # written, never swapped
    monkeypatch.undo()
    again = _features(tmp_path / "in", tmp_path / "state", tmp_path / "three")
    assert again[1]["increment"]["objects_added"] == 1  # the next run folds it
    rebuilt = _features(tmp_path / "in", tmp_path / "fresh", tmp_path / "four", rebuild=True)
    pd.testing.assert_frame_equal(again[0], rebuilt[0])


def test_an_interrupted_rebuild_leaves_the_current_state_as_it_was(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A rebuild of an unchanged history has the same generation: it must still write new files only."""
    _sample(tmp_path / "in", 2, [0])
    _features(tmp_path / "in", tmp_path / "state", tmp_path / "one")
    before = {p.relative_to(tmp_path / "state"): p.read_bytes() for p in (tmp_path / "state").rglob("*") if p.is_file()}

    def crash(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
        raise KeyboardInterrupt

    monkeypatch.setattr("steps.features.fold.write_features", crash)
    with pytest.raises(KeyboardInterrupt):
        _features(tmp_path / "in", tmp_path / "state", tmp_path / "two", rebuild=True)
    after = {p.relative_to(tmp_path / "state"): p.read_bytes() for p in (tmp_path / "state").rglob("*") if p.is_file()}
    assert {name: after[name] for name in before} == before  # nothing that existed was rewritten
    assert read_current(StateStore(str(tmp_path / "state"))).manifest is not None


@pytest.mark.parametrize("damage", ["pointer", "manifest", "totals", "contribution"])
def test_a_corrupt_or_missing_state_says_to_rebuild(tmp_path: Path, damage: str) -> None:
    tick = [0]
    _sample(tmp_path / "in", 2, tick)
    _features(tmp_path / "in", tmp_path / "state", tmp_path / "one")
    state = tmp_path / "state"
    manifest_name = json.loads((state / CURRENT).read_text())["manifest"]
    manifest = json.loads((state / manifest_name).read_text())
    if damage == "pointer":
        (state / CURRENT).write_text("{not json")
    elif damage == "manifest":
        (state / manifest_name).write_text('{"generation": 1}')
    elif damage == "totals":
        (state / manifest["totals"]).unlink()
    else:
        (state / next(iter(manifest["objects"].values()))["contribution"]).unlink()
    with pytest.raises(StateError) as raised:
        _features(tmp_path / "in", state, tmp_path / "two")
    assert "Rebuild" in str(raised.value) and "\n" not in str(raised.value)
    rebuilt = _features(tmp_path / "in", state, tmp_path / "three", rebuild=True)[0]
    assert len(rebuilt) > 0 and read_current(StateStore(str(state))).manifest is not None


def test_an_unreadable_object_leaves_the_state_unchanged_and_is_retried(tmp_path: Path) -> None:
    tick = [0]
    _sample(tmp_path / "in", 2, tick)
    _features(tmp_path / "in", tmp_path / "state", tmp_path / "one")
    pointer = (tmp_path / "state" / CURRENT).read_text()
    bad = tmp_path / "in" / "broken.csv.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00 this is not gzip")
    with pytest.raises(InputDataError) as raised:
        _features(tmp_path / "in", tmp_path / "state", tmp_path / "two")
    assert "broken.csv.gz" in str(raised.value)
    assert (tmp_path / "state" / CURRENT).read_text() == pointer
    shutil.copy(tmp_path / "in" / "day-00.csv", tmp_path / "x.csv")
    bad.unlink()
    _write(tmp_path / "in", "broken", _rows("rows", "fixed", 7), tick)  # fixed: the next run takes it
    quality = _features(tmp_path / "in", tmp_path / "state", tmp_path / "three")[1]
    assert quality["increment"]["objects_added"] == 1


def test_a_rebuild_reports_orders_that_span_objects(tmp_path: Path) -> None:
    folder, tick = tmp_path / "in", [0]
    folder.mkdir()
    _write(folder, "a", HEADER + "c1,o1,2024-01-05,10\nc2,o2,2024-01-05,3\n", tick)
    _write(folder, "b", HEADER + "c1,o1,2024-01-05,7\n", tick)
    quality = _features(folder, tmp_path / "state", tmp_path / "one", rebuild=True)[1]
    assert quality["increment"]["orders_spanning_objects"] == 1


def test_settings_change_rebuilds(tmp_path: Path) -> None:
    import datetime as dt

    tick = [0]
    _sample(tmp_path / "in", 2, tick)
    _features(tmp_path / "in", tmp_path / "state", tmp_path / "one")
    run_history(list_history(str(tmp_path / "in")), StateStore(str(tmp_path / "state")), tmp_path / "two",
                FeatureOptions(as_of=dt.date(2024, 12, 31), memory_limit="500MB", threads=1))
    quality = json.loads((tmp_path / "two" / "quality.json").read_text())
    assert quality["increment"]["rebuild"] and quality["as_of_date"] == "2024-12-31"
    run_history(list_history(str(tmp_path / "in")), StateStore(str(tmp_path / "state")), tmp_path / "three",
                FeatureOptions(as_of=dt.date(2024, 12, 31), timezone="America/New_York", memory_limit="500MB",
                               threads=1))
    zoned = json.loads((tmp_path / "three" / "quality.json").read_text())
    assert zoned["increment"]["rebuild"] and zoned["timezone"] == "America/New_York"  # a new zone rebuilds
    one_pass = compute.run(str(tmp_path / "in"), tmp_path / "four", FeatureOptions(
        as_of=dt.date(2024, 12, 31), timezone="America/New_York", memory_limit="500MB", threads=1)).quality
    assert zoned["warnings"] == one_pass["warnings"] != []  # the as-of date lies far after the data in both


def test_listing_is_exact_and_skips_the_pipelines_own_prefixes(tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_text(HEADER + "a,1,2024-01-01,1\n")
    (tmp_path / "orders.csv.gz").write_bytes(b"")
    (tmp_path / "orders.csv-old").mkdir()
    (tmp_path / "orders.csv-old" / "x.csv").write_text(HEADER)
    assert [o.key for o in list_history(str(tmp_path / "orders.csv"))] == [str(tmp_path / "orders.csv")]
    (tmp_path / "in" / "state").mkdir(parents=True)
    (tmp_path / "in" / "state" / "x.csv").write_text(HEADER)
    (tmp_path / "in" / "_SUCCESS").write_text("")
    (tmp_path / "in" / "day.csv").write_text(HEADER)
    (tmp_path / "in" / "by" / "state").mkdir(parents=True)  # a customer's folder that happens to be named state
    (tmp_path / "in" / "by" / "state" / "CA.csv").write_text(HEADER)
    expected = [str(tmp_path / "in" / "by" / "state" / "CA.csv"), str(tmp_path / "in" / "day.csv")]
    assert [o.key for o in list_history(str(tmp_path / "in"))] == expected
    # The one-pass reader (rfm features without --state) takes the same files, and lists the rest as skipped.
    files, skipped = find_input_files(str(tmp_path / "in"), tmp_path / "work")
    assert [name for _, name in files] == expected
    assert str(tmp_path / "in" / "state" / "x.csv") in skipped


def test_diff_and_fingerprint() -> None:
    a, b, b2 = HistoryObject("a", "1", "e", 3), HistoryObject("b", "1", "e", 3), HistoryObject("b", "2", "f", 3)
    increment = diff([a, b2, HistoryObject("c")], {"a": a, "b": b, "d": HistoryObject("d")})
    assert [o.key for o in increment.added] == ["c"] and increment.replaced == [b2]
    assert increment.removed == ["d"] and increment.unchanged == [a]
    assert fingerprint([a, b]) == fingerprint([b, a]) != fingerprint([a, b2])


@pytest.mark.parametrize(("code", "status", "missing"), [("404", 404, True), ("403", 403, False)])
def test_a_refused_state_check_is_not_a_missing_file(code: str, status: int, missing: bool) -> None:
    """A 404 is a missing file; a 403 (or any other refusal) names the permissions, not a rebuild."""
    import boto3
    from botocore.stub import Stubber

    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    store = StateStore("s3://bucket/rfm/state", client)
    with Stubber(client) as stub:
        stub.add_client_error("head_object", service_error_code=code, http_status_code=status,
                              expected_params={"Bucket": "bucket", "Key": "rfm/state/totals/a.parquet"})
        if missing:
            assert store.exists("totals/a.parquet") is False
        else:
            with pytest.raises(StateError, match="permissions") as raised:
                store.exists("totals/a.parquet")
            assert "Rebuild" not in str(raised.value)


def test_rows_held_back_as_future_count_once_today_reaches_them(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Without AsOfDate, a row dated after "today" counts once the date passes, as a rebuild then counts it."""
    import datetime as dt

    from steps.features import fold

    folder, tick, today = tmp_path / "in", [0], [dt.date(2024, 3, 10)]
    monkeypatch.setattr(fold, "today_in", lambda timezone: today[0])
    folder.mkdir()
    _write(folder, "early", HEADER + "a,o1,2024-03-01,10\nb,o2,2024-03-12,4\n", tick)
    _write(folder, "plain", HEADER + "a,o3,2024-03-02,20\n", tick)
    first, quality = _features(folder, tmp_path / "state", tmp_path / "one")
    assert set(first["customer_id"]) == {"a"} and quality["quarantined_by_reason"]["date_after_as_of"] == 1
    still = _features(folder, tmp_path / "state", tmp_path / "two")[1]  # the same day: nothing to read again
    assert still["increment"]["objects_redated"] == 0 and still["rows_read"] == 0
    today[0] = dt.date(2024, 3, 12)
    after, quality = _features(folder, tmp_path / "state", tmp_path / "three")
    assert quality["increment"]["objects_redated"] == 1 and quality["rows_read"] == 2  # only the early object
    rebuilt = _features(folder, tmp_path / "fresh", tmp_path / "four", rebuild=True)[0]
    pd.testing.assert_frame_equal(after, rebuilt)
    assert set(after["customer_id"]) == {"a", "b"}


def test_the_plan_keys_the_cache_by_day_while_held_back_rows_are_due(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """On SageMaker an unchanged fingerprint is a cache hit: the day held-back rows come due must change it
    (and only then), while the trigger still compares the objects alone."""
    import datetime as dt

    from steps.features import fold
    from steps.features.fold import plan_history

    folder, tick = tmp_path / "in", [0]
    monkeypatch.setattr(fold, "today_in", lambda timezone: dt.date(2024, 3, 10))
    folder.mkdir()
    _write(folder, "early", HEADER + "a,o1,2024-03-01,10\nb,o2,2024-03-20,4\n", tick)
    store = StateStore(str(tmp_path / "state"))
    before = plan_history(str(folder), store, dt.date(2024, 3, 10))  # nothing folded yet
    assert before["fingerprint"] == before["objects_fingerprint"] == fingerprint(list_history(str(folder)))
    _features(folder, tmp_path / "state", tmp_path / "one")  # holds b's row back until 2024-03-20

    def plan(day: dt.date) -> dict:
        return plan_history(str(folder), store, day)

    assert plan(dt.date(2024, 3, 11))["fingerprint"] == before["fingerprint"]  # not due: the cache holds
    assert "held_back_due" not in plan(dt.date(2024, 3, 18))
    due = [plan(dt.date(2024, 3, 19)), plan(dt.date(2024, 3, 20)), plan(dt.date(2024, 3, 21))]
    assert [p["held_back_due"] for p in due] == ["2024-03-20"] * 3  # from the day before (zones ahead of UTC)
    assert len({p["fingerprint"] for p in due} | {before["fingerprint"]}) == 4  # a new key each day
    assert {p["objects_fingerprint"] for p in due} == {before["fingerprint"]}
    assert plan(dt.date(2024, 3, 20))["fingerprint"] == due[1]["fingerprint"]  # the same day, the same key
    assert fold.load_history(store, due[1]["fingerprint"])[1] == list_history(str(folder))
