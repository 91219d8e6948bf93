"""report.html: every chart present, numbers right, text escaped, self-contained, and it renders in Chromium."""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from steps import columns as c
from steps import paths
from steps.model.evaluate import evaluate, execution_id_from_job_config
from steps.model.evaluate import main as evaluate_main
from steps.model.model_io import SegmentModel, load_model
from steps.report import data
from steps.report import svg_charts as svg
from steps.report.render import CHART_IDS, TABLE_IDS, render_report, stamp_package, write_report
from steps.segments import SEGMENT_GRID, SEGMENT_NAMES, segments_of
from tests.conftest import synthetic_features

QUALITY = {
    "rows_read": 1000, "rows_used": 900, "rows_quarantined": 100,
    "quarantined_by_reason": {"unparseable_date": 60, "missing_customer_id": 40},
    "as_of_date": "2024-01-01", "input_format": "generic", "customers": 600,
    "column_mapping": {"customer_id": "Customer ID"},
}
RUN_INFO = {"execution_id": "exec-42", "parameters": {"ModelApprovalStatus": "Approved"},
            "as_of_date": "2024-01-01", "input_format": "generic"}
K_SELECTION = [{"k": k, "silhouette": 0.7 - 0.05 * abs(k - 3), "inertia": 900.0 / k} for k in range(2, 8)]


@pytest.fixture(scope="module")
def model_meta(model_dir: Path) -> dict:
    return dict(load_model(model_dir).meta, k_selection=K_SELECTION)


@pytest.fixture(scope="module")
def evaluation(model_dir: Path, features_frame: pd.DataFrame) -> dict:
    return evaluate(load_model(model_dir), features_frame)


@pytest.fixture(scope="module")
def html(features_frame: pd.DataFrame, model_meta: dict, evaluation: dict) -> str:
    return render_report(features_frame, model_meta, evaluation, QUALITY, RUN_INFO)


class Tables(HTMLParser):
    """Cell texts of each ``<table id=...>``, and the ids of ``<figure class="chart">`` with their child tags."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.figures: dict[str, set[str]] = {}
        self._table: str | None = None
        self._figure: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "figure" and "chart" in (attributes.get("class") or "").split():
            self._figure = attributes.get("id") or ""
            self.figures[self._figure] = set()
        elif self._figure is not None:
            self.figures[self._figure].add(tag)
        if tag == "table" and attributes.get("id"):
            self._table = attributes["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self._figure = None
        elif tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._table and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, text: str) -> None:
        if self._cell is not None:
            self._cell.append(text)


def parse(document: str) -> Tables:
    parser = Tables()
    parser.feed(document)
    return parser


def rows_by_first_cell(table: list[list[str]]) -> dict[str, list[str]]:
    return {row[0]: row for row in table[1:]}


def test_every_chart_and_table_is_present(html: str) -> None:
    page = parse(html)
    assert list(page.figures) == list(CHART_IDS)
    for chart_id, children in page.figures.items():
        assert children & {"svg", "table", "p"}, f"{chart_id} is empty"
    assert set(TABLE_IDS) <= set(page.tables)
    assert html.count("<svg") >= 8


def test_segment_table_numbers(html: str, features_frame: pd.DataFrame) -> None:
    table = rows_by_first_cell(parse(html).tables["segment-table"])
    assert [name for name in table if name != "All customers"] == list(SEGMENT_NAMES)
    revenue = features_frame[c.MONETARY].sum()
    for name, group in features_frame.groupby(c.RFM_SEGMENT):
        row = table[name]
        assert row[2] == f"{len(group):,}"
        assert row[3] == f"{len(group) / len(features_frame):.1%}"
        assert row[4] == f"${group[c.MONETARY].sum():,.2f}"
        assert row[5] == f"{group[c.MONETARY].sum() / revenue:.1%}"
        assert row[6] == f"{group[c.RECENCY_DAYS].mean():,.0f}"
        assert row[7] == f"{group[c.FREQUENCY].mean():,.1f}"
        assert row[8] == f"${group[c.MONETARY].mean():,.2f}"
        assert row[9] == f"${group[c.MONETARY].sum() / group[c.FREQUENCY].sum():,.2f}"  # average order value
    assert table["All customers"][2] == f"{len(features_frame):,}"


def test_cluster_table_and_crosstab_match_the_model(html: str, features_frame: pd.DataFrame, model_dir: Path) -> None:
    model = load_model(model_dir)
    clusters = model.clusters(features_frame[list(c.MODEL_FEATURES)].to_numpy(float))
    table = rows_by_first_cell(parse(html).tables["cluster-table"])
    for cluster, size in enumerate(np.bincount(clusters, minlength=model.k)):
        assert table[str(cluster)][1] == model.names[cluster]
        assert table[str(cluster)][3] == f"{size:,}"
    crosstab = data.crosstab(clusters, features_frame[c.RFM_SEGMENT], model.k)
    expected = pd.crosstab(clusters, features_frame[c.RFM_SEGMENT])
    for segment in expected.columns:
        np.testing.assert_array_equal(crosstab[segment].to_numpy(), expected[segment].to_numpy())
    assert int(crosstab.to_numpy().sum()) == len(features_frame)


def test_rf_grid_counts_every_customer_in_its_cell(features_frame: pd.DataFrame, html: str) -> None:
    grid = data.rf_grid(features_frame)
    assert int(grid.sum()) == len(features_frame)
    for (r, f), _ in SEGMENT_GRID.items():
        in_cell = (features_frame[c.R_SCORE] == r) & (features_frame[c.F_SCORE] == f)
        assert grid[r - 1, f - 1] == int(in_cell.sum())
    assert "Potential" in html and "Loyalist" in html  # long names are wrapped onto two lines


def test_quality_accounting_and_run_parameters(html: str) -> None:
    tables = parse(html).tables
    run = rows_by_first_cell(tables["run-parameters"])
    assert run["Execution id"][1] == "exec-42"
    assert run["Parameters"][1] == "ModelApprovalStatus=Approved"
    assert run["As-of date"][1] == "2024-01-01"
    assert run["Model hyperparameters"][1] == "max_customers=200000, num_clusters=3, random_state=0"
    assert "Rows quarantined" in html and "unparseable_date" in html and "1,000" in html
    assert "Every row is accounted for" in html


def test_missing_quality_and_given_k_are_said(features_frame: pd.DataFrame, model_dir: Path) -> None:
    meta = load_model(model_dir).meta
    assert meta["k_selection"] == []
    page = render_report(features_frame, meta, {}, None, {})
    assert "quality.json was not available" in page
    assert "k was given (k = 3)" in page
    assert list(parse(page).figures) == list(CHART_IDS)


def test_unbalanced_accounting_is_flagged(features_frame: pd.DataFrame, model_meta: dict) -> None:
    page = render_report(features_frame, model_meta, {}, dict(QUALITY, rows_used=1), RUN_INFO)
    assert "does not add up" in page


def test_text_is_escaped(features_frame: pd.DataFrame, model_meta: dict) -> None:
    hostile = "<script>alert('x')</script>"
    meta = dict(model_meta, names=[hostile, "A & B", '"quoted"'])
    frame = features_frame.copy()
    frame[c.RFM_SEGMENT] = frame[c.RFM_SEGMENT].where(frame[c.R_SCORE] != 1, "<img onerror=x>")
    page = render_report(frame, meta, {}, dict(QUALITY, quarantined_by_reason={"<b>bad</b>": 100}),
                         {"execution_id": "<i>run</i>", "parameters": {"<p>": "</td>"}})
    lowered = page.lower()
    for raw in ("<script", "<img", "<b>bad", "<i>run", "<p>", "</td>&"):
        assert raw not in lowered
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "A &amp; B" in page and "&quot;quoted&quot;" in page
    assert parse(page).tables["cluster-table"][1][1] == hostile  # the parser sees the text, not markup


def test_self_contained_no_customer_rows(features_frame: pd.DataFrame, model_meta: dict) -> None:
    frame = features_frame.assign(**{c.CUSTOMER_ID: [f"SECRET-{i}" for i in range(len(features_frame))]})
    page = render_report(frame, model_meta, {}, QUALITY, RUN_INFO)
    lowered = page.lower()
    for remote in ("http://", "https://", "src=", "<script", "<link", "@import", "url(", "xlink:href", "//cdn"):
        assert remote not in lowered, remote
    assert "SECRET-" not in page


def test_deterministic(features_frame: pd.DataFrame, model_meta: dict, evaluation: dict) -> None:
    first = render_report(features_frame, model_meta, evaluation, QUALITY, RUN_INFO)
    assert first == render_report(features_frame.copy(), json.loads(json.dumps(model_meta)),
                                  json.loads(json.dumps(evaluation)), dict(QUALITY), dict(RUN_INFO))


def test_tiny_input_with_two_clusters(tmp_path: Path) -> None:
    from steps.model.train import train

    frame = synthetic_features(customers=3, seed=1)
    meta = train(frame, tmp_path / "model", num_clusters=2, random_state=0)
    page = render_report(frame, meta, {}, None, {"execution_id": "tiny"})
    assert list(parse(page).figures) == list(CHART_IDS)
    table = rows_by_first_cell(parse(page).tables["cluster-table"])
    assert sum(int(table[str(i)][3]) for i in range(2)) == 3


def test_empty_features_render(model_meta: dict) -> None:
    frame = synthetic_features(customers=30).iloc[0:0]
    page = render_report(frame, model_meta, {}, None, {})
    assert list(parse(page).figures) == list(CHART_IDS)
    assert "no data" in page


def test_large_input_is_aggregated_and_fast(model_meta: dict) -> None:
    rng = np.random.default_rng(0)
    customers = 300_000
    r, f = rng.integers(1, 6, customers), rng.integers(1, 6, customers)
    frame = pd.DataFrame({
        c.CUSTOMER_ID: np.arange(customers).astype(str), c.RECENCY_DAYS: rng.integers(1, 900, customers),
        c.FREQUENCY: rng.geometric(0.3, customers), c.MONETARY: rng.lognormal(4, 1.5, customers).round(2),
        c.R_SCORE: r, c.F_SCORE: f, c.RFM_SEGMENT: segments_of(r, f),
    })
    page = render_report(frame, model_meta, {}, QUALITY, RUN_INFO)
    assert len(page) < 200_000  # aggregates only: the size does not grow with the customers
    assert f"{customers:,}" in page


@pytest.mark.parametrize(("values", "log_scale", "discrete"), [
    (np.arange(1, 31), False, True),
    (np.r_[np.ones(500), np.arange(2, 400)], True, True),
    (np.random.default_rng(0).lognormal(4, 2, 5000), True, False),
    (np.r_[-50.0, 0.0, np.random.default_rng(1).lognormal(3, 1, 300)], True, False),
    (np.full(7, 12.5), True, False),
    (np.full(7, 3), False, True),
    (np.array([np.nan, 1.0, np.inf, 2.0]), False, False),
    (np.array([]), True, False),
])
def test_histogram_counts_every_finite_value(values: np.ndarray, log_scale: bool, discrete: bool) -> None:
    binned = data.histogram(values, log_scale=log_scale, discrete=discrete)
    assert sum(binned.counts) == int(np.isfinite(values).sum())
    if binned.bin_labels is not None:
        assert len(binned.bin_labels) == len(binned.counts)
    if binned.edge_labels is not None:
        assert len(binned.edge_labels) == len(binned.counts) + 1


@pytest.mark.parametrize(("low", "high"), [(0, 87), (0.38, 0.56), (-3, 4), (5, 5), (0, 0), (760, 4354)])
def test_nice_ticks_cover_the_range(low: float, high: float) -> None:
    ticks = svg.nice_ticks(low, high)
    assert ticks[0] <= low and ticks[-1] >= high and ticks == sorted(set(ticks)) and len(ticks) >= 2


def test_charts_escape_their_text() -> None:
    charts = [
        svg.bar_chart(["<a>"], {"<b>": [1.0]}, label="<c>"),
        svg.histogram([1, 2], label="<c>", x_label="<d>", bin_labels=["<e>", "f"]),
        svg.heat_map([[1.0]], label="<c>", row_labels=["<r>"], col_labels=["<k>"], cell_text=[[["<t>"]]]),
        svg.line_chart([1, 2], [3, 4], label="<c>", x_label="<x>", y_label="<y>", marker_x=1, marker_label="<m>"),
    ]
    for chart in charts:
        assert chart.startswith("<svg ") and chart.endswith("</svg>")
        assert not re.search(r"<[a-z]>", chart), chart


def test_evaluate_writes_the_report_next_to_evaluation_json(tmp_path: Path, features_frame: pd.DataFrame,
                                                           model_dir: Path) -> None:
    features = tmp_path / "features"
    features.mkdir()
    features_frame.to_parquet(features / paths.RFM_FILE)
    (features / paths.QUALITY_FILE).write_text(json.dumps(QUALITY))
    output = tmp_path / "evaluation"
    assert evaluate_main(["--model", str(model_dir), "--features", str(features), "--output", str(output),
                          "--execution-id", "exec-7"]) == 0
    evaluation = json.loads((output / paths.EVALUATION_FILE).read_text())
    assert set(evaluation) == {"segmentation_metrics", "clusters", "rfm_segments", "k_selection",
                               "metric_sample_size", "metric_sample", "quality_gate", "compared_with"}
    page = (output / paths.REPORT_FILE).read_text()
    run = rows_by_first_cell(parse(page).tables["run-parameters"])
    assert run["Execution id"][1] == "exec-7"
    assert run["Input format"][1] == "generic"
    assert "unparseable_date" in page

    (features / paths.QUALITY_FILE).unlink()
    assert evaluate_main(["--model", str(model_dir), "--features", str(features), "--output", str(output)]) == 0
    assert "quality.json was not available" in (output / paths.REPORT_FILE).read_text()


def features_folder(tmp_path: Path, features_frame: pd.DataFrame) -> Path:
    folder = tmp_path / "features"
    folder.mkdir()
    features_frame.to_parquet(folder / paths.RFM_FILE)
    (folder / paths.QUALITY_FILE).write_text(json.dumps(QUALITY))
    return folder


def test_the_reports_cluster_sizes_are_the_evaluations(tmp_path: Path, features_frame: pd.DataFrame,
                                                       model_dir: Path) -> None:
    features = features_folder(tmp_path, features_frame)
    assert evaluate_main(["--model", str(model_dir), "--features", str(features),
                          "--output", str(tmp_path / "evaluation")]) == 0
    evaluation = json.loads((tmp_path / "evaluation" / paths.EVALUATION_FILE).read_text())
    assert sum(cluster["size"] for cluster in evaluation["clusters"]) == len(features_frame)
    table = rows_by_first_cell(parse((tmp_path / "evaluation" / paths.REPORT_FILE).read_text()).tables["cluster-table"])
    for cluster in evaluation["clusters"]:  # the report's cluster sizes are the evaluation's
        assert table[str(cluster["cluster"])][3] == f"{cluster['size']:,}"


def test_report_uses_the_clusters_it_is_given(features_frame: pd.DataFrame, model_meta: dict, evaluation: dict,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def no_assignment(model: SegmentModel, features: np.ndarray) -> np.ndarray:
        raise AssertionError("the report assigned clusters again")

    monkeypatch.setattr(SegmentModel, "clusters", no_assignment)
    given = np.zeros(len(features_frame), dtype=int)
    page = render_report(features_frame, model_meta, evaluation, QUALITY, RUN_INFO, cluster_of=given)
    table = rows_by_first_cell(parse(page).tables["cluster-table"])
    assert table["0"][3] == f"{len(features_frame):,}"
    assert table["1"][3] == table["2"][3] == "0"
    with pytest.raises(ValueError, match="entries for"):
        render_report(features_frame, model_meta, evaluation, QUALITY, RUN_INFO, cluster_of=given[1:])


def job_config(tmp_path: Path, *uris: str) -> Path:
    """A processingjobconfig.json as SageMaker writes it (the CreateProcessingJob request), with these output URIs."""
    path = tmp_path / "processingjobconfig.json"
    outputs = [{"OutputName": f"out{i}", "S3Output": {"S3Uri": uri, "LocalPath": f"/opt/ml/processing/output/{i}",
                                                    "S3UploadMode": "EndOfJob"}} for i, uri in enumerate(uris)]
    path.write_text(json.dumps({"ProcessingJobName": "pipelines-abc-EvaluateSegmenter-x",
                                "AppSpecification": {"ContainerEntrypoint": ["rfm-evaluate"]},
                                "ProcessingOutputConfig": {"Outputs": outputs}}))
    return path


def test_evaluate_names_the_run_from_the_job_config(tmp_path: Path, features_frame: pd.DataFrame,
                                                    model_dir: Path) -> None:
    config = job_config(tmp_path, "s3://bucket/rfm/executions/k2x9q7zt1abc/evaluation")
    output = tmp_path / "evaluation"
    assert evaluate_main(["--model", str(model_dir), "--features", str(features_folder(tmp_path, features_frame)),
                          "--output", str(output), "--job-config", str(config)]) == 0
    page = (output / paths.REPORT_FILE).read_text()
    assert rows_by_first_cell(parse(page).tables["run-parameters"])["Execution id"][1] == "k2x9q7zt1abc"
    assert "<title>RFM segmentation report \u2013 k2x9q7zt1abc</title>" in page


def test_execution_id_from_job_config_without_one(tmp_path: Path) -> None:
    assert execution_id_from_job_config(None) == ""
    assert execution_id_from_job_config(tmp_path / "missing.json") == ""
    assert execution_id_from_job_config(job_config(tmp_path, "s3://bucket/elsewhere/evaluation")) == ""
    assert execution_id_from_job_config(job_config(tmp_path, "s3://bucket/rfm/executions")) == ""
    (tmp_path / "broken.json").write_text("{")
    assert execution_id_from_job_config(tmp_path / "broken.json") == ""


# --- headless Chromium ---------------------------------------------------------------------------------------------


def chromium() -> str | None:
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def decode_png(blob: bytes) -> np.ndarray:
    """An 8-bit, non-interlaced RGB or RGBA PNG as a ``(height, width, channels)`` array (stdlib zlib + numpy).

    Rows are unfiltered along anti-diagonals: pixel (y, x) needs only (y, x-1),
    (y-1, x) and (y-1, x-1), so each diagonal is one vectorised step.
    """
    assert blob[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, chunks = 8, []
    while position < len(blob):
        length, kind = struct.unpack(">I4s", blob[position:position + 8])
        body = blob[position + 8:position + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
        elif kind == b"IDAT":
            chunks.append(body)
        position += 12 + length
    channels = 3 if colour == 2 else 4
    raw = np.frombuffer(zlib.decompress(b"".join(chunks)), dtype=np.uint8).reshape(height, width * channels + 1)
    kinds = raw[:, 0].astype(np.intp)
    filtered = raw[:, 1:].reshape(height * width, channels).astype(np.int16)
    stride = width + 1  # the image with a zero row above and a zero column left, flattened
    image = np.zeros(((height + 1) * stride, channels), dtype=np.int16)
    for diagonal in range(height + width - 1):
        y = np.arange(max(0, diagonal - width + 1), min(height, diagonal + 1))
        x = diagonal - y
        target = (y + 1) * stride + x + 1
        left, up, corner = image[target - 1], image[target - stride], image[target - stride - 1]
        estimate = left + up - corner
        d_left, d_up, d_corner = np.abs(estimate - left), np.abs(estimate - up), np.abs(estimate - corner)
        paeth = np.where((d_left <= d_up) & (d_left <= d_corner), left, np.where(d_up <= d_corner, up, corner))
        predictions = np.stack([np.zeros_like(left), left, up, (left + up) >> 1, paeth])  # by filter type 0..4
        image[target] = (filtered[y * width + x] + predictions[kinds[y], np.arange(len(y))]) & 0xFF
    return image.reshape(height + 1, stride, channels)[1:, 1:, :3].astype(np.uint8)


def run_chromium(binary: str, profile: Path, *arguments: str) -> subprocess.CompletedProcess:
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--user-data-dir={profile}", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tmp_path: Path, features_frame: pd.DataFrame, model_meta: dict,
                                             evaluation: dict) -> None:
    binary = chromium()
    if binary is None:
        pytest.skip("Chromium is not installed (no `chromium` on PATH, no /usr/bin/chromium): the report was not "
                    "rendered. Install it with `apt-get install chromium` (.ci/run does this as root).")
    report = write_report(tmp_path / "report", features_frame, model_meta, evaluation, QUALITY, RUN_INFO)
    url = report.resolve().as_uri()

    screenshot = tmp_path / "report.png"
    done = run_chromium(binary, tmp_path / "profile-shot", f"--screenshot={screenshot}", "--window-size=1280,4000",
                        url)
    assert screenshot.is_file(), f"no screenshot (exit {done.returncode}): {done.stderr[-2000:]}"
    image = decode_png(screenshot.read_bytes())
    assert image.shape[:2] == (4000, 1280)
    pixels = image.reshape(-1, 3).astype(int)
    colours, counts = np.unique(pixels @ np.array([65536, 256, 1]), return_counts=True)
    background = colours[counts.argmax()]
    painted = (counts.sum() - counts.max()) / counts.sum()
    assert painted > 0.05, f"the page is blank: only {painted:.1%} of pixels differ from #{background:06x}"
    assert len(colours) > 50, "too few colours for a page of charts"
    for colour in svg.PALETTE[:3]:  # the bars of the three histograms were painted
        target = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(pixels - target).max(axis=1) <= 2).sum() > 500, f"no {colour} bars on the page"

    dom = run_chromium(binary, tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = parse(dom.stdout)
    missing = [chart_id for chart_id in CHART_IDS if chart_id not in page.figures]
    assert not missing, f"charts missing from the DOM: {missing}"
    for chart_id in CHART_IDS:
        assert page.figures[chart_id] & {"svg", "table", "p"}, f"{chart_id} is empty in the DOM"
    assert dom.stdout.count("<svg") >= 8


# --- issue 15: a report that says what to do and reads right ------------------------------------------------------


def section(page: str, section_id: str) -> str:
    start = page.index(f'<section id="{section_id}">')
    return page[start:page.index("</section>", start)]


def test_money_is_shown_in_the_runs_currency(features_frame: pd.DataFrame, model_meta: dict,
                                             evaluation: dict) -> None:
    page = render_report(features_frame, model_meta, evaluation, QUALITY, dict(RUN_INFO, currency="EUR"))
    table = rows_by_first_cell(parse(page).tables["segment-table"])
    assert table["All customers"][4] == f"\u20ac{features_frame[c.MONETARY].sum():,.2f}"
    assert "Money in EUR" in page and "$" not in section(page, "segments")


def test_every_axis_of_the_cluster_profile_is_coloured_by_better(features_frame: pd.DataFrame, model_meta: dict,
                                                                 evaluation: dict) -> None:
    page = render_report(features_frame, model_meta, evaluation, QUALITY, RUN_INFO)
    figure = page[page.index('id="cluster-profiles"'):]
    figure = figure[:figure.index("</figure>")]
    fills = re.findall(r'<rect x="[^"]+" y="[^"]+" width="\d+" height="\d+" fill="(#[0-9a-f]{6})"/>', figure)
    centers = model_meta["centers"]
    assert len(fills) == 3 * len(centers)
    best = fills[:3]  # cluster 0: recent (low recency: a negative centre), frequent, high spend
    assert centers[0][0] < 0 < centers[0][1]
    for fill in best:
        red, blue = int(fill[1:3], 16), int(fill[5:7], 16)
        assert blue > red, f"cluster 0 is better than average on every axis, yet {fill} is not blue"
    assert "recency_days: lower is better" in figure


def test_grid_cells_show_revenue(features_frame: pd.DataFrame, html: str) -> None:
    cell = (features_frame[c.R_SCORE] == 5) & (features_frame[c.F_SCORE] == 5)
    revenue = features_frame.loc[cell, c.MONETARY].sum()
    assert f"${revenue:,.0f}" in section(html, "grid")
    np.testing.assert_allclose(data.rf_revenue(features_frame).sum(), features_frame[c.MONETARY].sum())


def test_clusters_show_their_silhouette(html: str, evaluation: dict) -> None:
    table = rows_by_first_cell(parse(html).tables["cluster-table"])
    for entry in evaluation["clusters"]:
        assert -1 <= entry["silhouette"] <= 1
        assert table[str(entry["cluster"])][-1] == f"{entry['silhouette']:.2f}"
    sizes = np.array([e["size"] for e in evaluation["clusters"]])
    weighted = sum(e["silhouette"] * e["size"] for e in evaluation["clusters"]) / sizes.sum()
    assert weighted == pytest.approx(evaluation["segmentation_metrics"]["silhouette"]["value"], abs=1e-9)


def test_the_playbook_says_what_to_do_with_every_segment_and_cluster(html: str, model_meta: dict) -> None:
    from steps.playbook import load_playbook

    rows = parse(html).tables["playbook-table"][1:]
    book = load_playbook()
    by_group = {row[0]: row[3] for row in rows}
    for name, action in by_group.items():
        if name.startswith("segment: "):
            assert action == book.for_segment(name.removeprefix("segment: "))
    for i, name in enumerate(model_meta["names"]):
        assert by_group[f"cluster {i}: {name}"] == book.for_cluster(name, model_meta["dominant_segments"][i])
    assert html.index('id="playbook"') < html.index('id="segments"')  # what to do comes first


def test_the_report_links_its_guide(html: str) -> None:
    assert 'href="#guide"' in html and "docs/reading-the-report.md" in section(html, "guide")
    assert (Path(__file__).parents[1] / "docs" / "reading-the-report.md").is_file()


def test_quality_gate_thresholds_values_and_verdict(features_frame: pd.DataFrame, model_meta: dict,
                                                    evaluation: dict) -> None:
    from steps.model.quality_gate import gate_verdict

    metrics = evaluation["segmentation_metrics"]
    failing = dict(evaluation, quality_gate=gate_verdict(metrics["silhouette"]["value"],
                                                         metrics["min_cluster_share"]["value"], 3, 3, 0.99, 0.01))
    page = render_report(features_frame, model_meta, failing, QUALITY, RUN_INFO)
    gate = rows_by_first_cell(parse(page).tables["quality-gate"])
    assert gate["Silhouette"][2:] == [">= 0.99", "failed"]
    assert gate["Smallest cluster share"][3] == "passed"
    assert 'id="gate-banner"' in page and "NumClusters=3 was set" in page
    assert 'id="gate-banner"' not in render_report(features_frame, model_meta, evaluation, QUALITY, RUN_INFO)


def test_changes_say_first_run_without_a_previous_one(html: str) -> None:
    assert "First run" in section(html, "changes")


def test_changes_compare_sizes_and_revenue_and_show_the_migration_matrix(features_frame: pd.DataFrame,
                                                                        model_meta: dict, evaluation: dict) -> None:
    previous = features_frame.iloc[:400].copy()
    previous[c.MONETARY] = previous[c.MONETARY] * 2
    changes = pd.DataFrame({
        "customer_id": ["a", "b", "c", "d"], "previous_segment": ["Champions", "Loyal", None, "Hibernating"],
        "segment": ["Loyal", "Loyal", "Champions", None], "previous_cluster_name": ["x", "y", None, "z"],
        "cluster_name": ["y", "y", "x", None], "change": ["moved", "moved", "entered", "left"]})
    page = render_report(features_frame, model_meta, evaluation, QUALITY, RUN_INFO, previous=previous,
                         changes=changes, baseline_note="Compared with the segments of execution e1.")
    rows = rows_by_first_cell(parse(page).tables["segment-comparison"])
    now = int((features_frame[c.RFM_SEGMENT] == "Champions").sum())
    before = int((previous[c.RFM_SEGMENT] == "Champions").sum())  # every customer published, not only movers
    assert before > 1
    assert rows["Champions"][1:4] == [f"{before:,}", f"{now:,}", f"{now - before:+,}"]
    was = previous.loc[previous[c.RFM_SEGMENT] == "Champions", c.MONETARY].sum()
    assert rows["Champions"][4] == f"${was:,.2f}"
    # Every customer is in one cell (the stayers on the diagonal), with the cell's revenue now.
    expected = pd.crosstab(pd.Series(list(previous[c.RFM_SEGMENT]) + ["(entered)"] * (len(features_frame) - 400)),
                           features_frame[c.RFM_SEGMENT].to_numpy())
    spent = features_frame[c.MONETARY].groupby(
        [np.array(list(previous[c.RFM_SEGMENT]) + ["(entered)"] * (len(features_frame) - 400)),
         features_frame[c.RFM_SEGMENT].to_numpy()]).sum()
    table = parse(page).tables["migration-matrix"]
    matrix, header = rows_by_first_cell(table), table[0]
    assert sum(int(cell.split("$")[0].replace(",", "")) for row in table[1:] for cell in row[1:]) == len(features_frame)
    for (before, now), n in expected.stack().items():
        if n:
            assert matrix[before][header.index(now)] == f"{n:,}${spent[(before, now)]:,.0f}", (before, now)
    assert header[1:] == [n for n in SEGMENT_NAMES if n in expected.columns]  # nobody left here
    assert page.count('<section id="changes">') == 1 and "First run" not in page
    assert page.count('class="stay"') == sum(1 for n in SEGMENT_NAMES
                                            if n in expected.index and n in expected.columns)
    assert "Compared with the segments of execution e1." in section(page, "changes")


# --- issue 12 item 6 / 15 item 6: the comparison with the last publish, made by the evaluation step -------------


def _segments_of(features: pd.DataFrame, model_dir: Path) -> pd.DataFrame:
    """The segments.parquet a publish of ``features`` with the model writes (the columns the baseline reads)."""
    model = load_model(model_dir)
    frame = features[[c.CUSTOMER_ID, c.RFM_SEGMENT, c.MONETARY]].copy()
    frame[c.CLUSTER_NAME] = np.asarray(model.names, dtype=object)[model.clusters(features[list(c.MODEL_FEATURES)]
                                                                                 .to_numpy(dtype=float))]
    return frame


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_evaluations_changes_are_the_exports(seed: int) -> None:
    """compare_segments gives the rows the export Lambda writes to changes.parquet."""
    from steps.published import changes_table, compare
    from steps.report.baseline import compare_segments

    rng = np.random.default_rng(seed)
    names, clusters = np.array(["Champions", "Loyal", "At Risk"]), np.array(["Big", "Small"])

    def frame(ids: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({c.CUSTOMER_ID: ids.astype(str), c.CLUSTER: rng.integers(0, 2, len(ids)),
                             c.CLUSTER_NAME: rng.choice(clusters, len(ids)),
                             c.RFM_SEGMENT: rng.choice(names, len(ids))})

    previous, current = frame(rng.choice(300, 200, replace=False)), frame(rng.choice(300, 200, replace=False))
    ours = compare_segments(previous, current)
    theirs = changes_table(compare(previous, current).changes).to_pandas()
    assert len(ours) > 0 and set(ours[c.CHANGE]) == {"left", "moved", "entered"}
    pd.testing.assert_frame_equal(ours.astype(object).where(ours.notna(), None),
                                  theirs.astype(object).where(theirs.notna(), None))


@pytest.fixture
def s3_bucket(fake_aws):
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="rfm-bucket")
        yield client


def _publish_to(client, segments: pd.DataFrame, execution_id: str = "e1") -> None:
    """What the export Lambda leaves under <prefix>/published/ (lambdas/export/changes.write_published)."""
    from lambdas.export.changes import write_published
    from lambdas.export.storage import Storage

    buffer = io.BytesIO()
    segments.to_parquet(buffer, index=False)
    client.put_object(Bucket="rfm-bucket", Key=f"rfm/executions/{execution_id}/segments/segments.parquet",
                      Body=buffer.getvalue())  # where the export wrote this run's segments
    write_published(Storage(s3=client), "s3://rfm-bucket/rfm/published",
                    f"s3://rfm-bucket/rfm/executions/{execution_id}/segments/segments.parquet", execution_id,
                    "arn:aws:sagemaker:us-east-1:123456789012:model-package/rfm-segmenter/1", ("s3",), len(segments))


def test_the_baseline_is_read_from_s3_when_something_was_published(s3_bucket, features_frame: pd.DataFrame,
                                                                   model_dir: Path) -> None:
    from steps.report.baseline import read_baseline

    assert not read_baseline("s3://rfm-bucket/rfm/published", s3_bucket).found  # nothing published yet
    _publish_to(s3_bucket, _segments_of(features_frame, model_dir))
    baseline = read_baseline("s3://rfm-bucket/rfm/published", s3_bucket)
    assert baseline.found and baseline.execution_id == "e1" and not baseline.problem
    assert len(baseline.segments) == len(features_frame)
    assert set(baseline.segments.columns) == {c.CUSTOMER_ID, c.RFM_SEGMENT, c.CLUSTER_NAME, c.MONETARY}


def test_the_baseline_is_the_publish_the_export_reads_next(tmp_path: Path, features_frame: pd.DataFrame,
                                                           model_dir: Path) -> None:
    """The evaluation reads the last publish with the export's own reader: same execution, same time, and a
    damaged manifest is a named problem, not a stop."""
    from lambdas.export.changes import write_published
    from lambdas.export.storage import Storage
    from steps.published import read_published
    from steps.report.baseline import read_baseline

    folder = tmp_path / "published"
    assert not read_baseline(str(folder)).found and not read_baseline(str(folder)).problem  # nothing yet
    segments = tmp_path / "segments.parquet"
    _segments_of(features_frame, model_dir).to_parquet(segments, index=False)
    write_published(Storage(), str(folder), str(segments), "e7", "arn:package/1", ("s3",), len(features_frame))
    exported, baseline = read_published(Storage(), str(folder)), read_baseline(str(folder))
    assert (baseline.execution_id, baseline.published_at) == (exported.execution_id, exported.published_at)
    assert baseline.execution_id == "e7" and baseline.published_at.endswith("Z")
    (folder / paths.PUBLISHED_MANIFEST).write_text("[1, 2]")
    damaged = read_baseline(str(folder))
    assert not damaged.found and "published.json is not a JSON object" in damaged.problem


def test_an_unreadable_baseline_is_named_in_the_report_and_stops_nothing(s3_bucket, tmp_path: Path,
                                                                         features_frame: pd.DataFrame,
                                                                         model_dir: Path) -> None:
    s3_bucket.put_object(Bucket="rfm-bucket", Key="rfm/published/published.json", Body=b'{"execution_id": "e1"}')
    s3_bucket.put_object(Bucket="rfm-bucket", Key="rfm/published/segments.parquet", Body=b"not parquet")
    features = tmp_path / "features"
    features.mkdir()
    features_frame.to_parquet(features / paths.RFM_FILE)
    output = tmp_path / "evaluation"
    assert evaluate_main(["--model", str(model_dir), "--features", str(features), "--output", str(output),
                          "--published", "s3://rfm-bucket/rfm/published"]) == 0
    report = json.loads((output / paths.EVALUATION_FILE).read_text())
    assert report["compared_with"]["found"] is False and "could not be read" in report["compared_with"]["problem"]
    changes = section((output / paths.REPORT_FILE).read_text(), "changes")
    assert "No comparison: the last publish at s3://rfm-bucket/rfm/published could not be read" in changes


def test_on_sagemaker_the_report_compares_with_the_last_publish(s3_bucket, tmp_path: Path,
                                                                features_frame: pd.DataFrame, model_dir: Path) -> None:
    """The evaluation container reads <prefix>/published/ from S3 and renders sizes, revenue and the matrix."""
    features = tmp_path / "features"
    features.mkdir()
    features_frame.to_parquet(features / paths.RFM_FILE)
    arguments = ["--model", str(model_dir), "--features", str(features), "--published", "s3://rfm-bucket/rfm/published"]

    first = tmp_path / "first"
    assert evaluate_main([*arguments, "--output", str(first)]) == 0
    assert "First run" in section((first / paths.REPORT_FILE).read_text(), "changes")
    assert json.loads((first / paths.EVALUATION_FILE).read_text())["compared_with"] == {"found": False,
                                                                                         "problem": None}

    published = _segments_of(features_frame, model_dir)
    published = published.iloc[50:].copy()  # 50 customers are new since then
    published.loc[published.index[:30], c.RFM_SEGMENT] = "Hibernating"  # ... and some were elsewhere
    gone = pd.DataFrame({c.CUSTOMER_ID: ["gone-1", "gone-2"], c.RFM_SEGMENT: ["Champions", "Champions"],
                         c.CLUSTER_NAME: ["x", "x"], c.MONETARY: [10.0, 20.0]})
    _publish_to(s3_bucket, pd.concat([published, gone], ignore_index=True), "exec-previous")
    second = tmp_path / "second"
    assert evaluate_main([*arguments, "--output", str(second)]) == 0
    page = (second / paths.REPORT_FILE).read_text()
    changes = section(page, "changes")
    assert "First run" not in changes and "execution exec-previous" in changes
    matrix = rows_by_first_cell(parse(page).tables["migration-matrix"])
    header = parse(page).tables["migration-matrix"][0]

    def count(cell: str) -> int:
        return int(cell.split("$")[0].replace(",", ""))

    assert sum(count(v) for v in matrix["(entered)"][1:]) == 50
    assert matrix["Champions"][header.index("(left)")] == "2$30"  # their revenue at the last publish
    assert sum(count(v) for v in matrix["Hibernating"][1:]) == 30 + int(
        (published.iloc[30:][c.RFM_SEGMENT] == "Hibernating").sum())
    stayed = features_frame.iloc[80:][c.RFM_SEGMENT]
    champions = stayed == "Champions"
    assert count(matrix["Champions"][header.index("Champions")]) == int(champions.sum())
    summary = json.loads((second / paths.EVALUATION_FILE).read_text())["compared_with"]
    assert summary["execution_id"] == "exec-previous" and summary["customers_before"] == len(published) + 2
    assert (summary["entered"], summary["left"]) == (50, 2)


def test_the_metrics_sample_is_said_in_the_evaluation_and_the_report(features_frame: pd.DataFrame,
                                                                     model_dir: Path, model_meta: dict,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from steps.model import evaluate as evaluate_module

    model = load_model(model_dir)
    everyone = evaluate(model, features_frame, random_state=5)
    assert everyone["metric_sample"] == {"customers": len(features_frame), "sampled": len(features_frame),
                                         "is_sample": False, "seed": 5,
                                         "metrics": list(evaluate_module.SAMPLED_METRICS)}
    page = render_report(features_frame, model_meta, everyone, QUALITY, RUN_INFO)
    assert f"Metrics computed on all {len(features_frame):,} customers" in section(page, "model")
    monkeypatch.setattr(evaluate_module, "METRIC_SAMPLE", 200)
    sampled = evaluate(model, features_frame, random_state=5)
    assert sampled["metric_sample"]["sampled"] == 200 and sampled["metric_sample"]["is_sample"] is True
    assert sum(cluster["size"] for cluster in sampled["clusters"]) == len(features_frame)  # sizes count everyone
    assert evaluate(model, features_frame, random_state=5)["segmentation_metrics"] == sampled["segmentation_metrics"]
    page = render_report(features_frame, model_meta, sampled, QUALITY, RUN_INFO)
    assert (f"Computed on a random sample of 200 of the {len(features_frame):,} customers (seed 5)"
            in section(page, "model"))


def test_a_model_fitted_on_a_sample_says_so(features_frame: pd.DataFrame, model_meta: dict, evaluation: dict) -> None:
    sampled = dict(model_meta, training_sample={"customers": 2_000_000, "fitted_on": 200_000, "max_customers": 200_000})
    assert "fitted on a sample of 200,000 of the 2,000,000 customers" in section(
        render_report(features_frame, sampled, evaluation, QUALITY, RUN_INFO), "model")
    assert 'id="training-sample"' not in render_report(features_frame, model_meta, evaluation, QUALITY, RUN_INFO)


def test_stamp_names_the_package(html: str) -> None:
    arn = "arn:aws:sagemaker:local:000000000000:model-package/rfm-segmenter/7"
    page = stamp_package(html, arn, "PendingManualApproval", "output/reports/7.html")
    assert page.count(arn) == 2 and "output/reports/7.html" in page
    assert page.index('id="model-package"') < page.index("<h1>")


def test_evaluate_shows_the_parameters_used_and_the_gate(tmp_path: Path, features_frame: pd.DataFrame,
                                                         model_dir: Path) -> None:
    features = tmp_path / "features"
    features.mkdir()
    features_frame.to_parquet(features / paths.RFM_FILE)
    output = tmp_path / "evaluation"
    assert evaluate_main(["--model", str(model_dir), "--features", str(features), "--output", str(output),
                          "--min-silhouette=0.99", "--min-cluster-share=0.01", "--currency=GBP",
                          "--input-location=s3://bucket/rfm/input/"]) == 0
    report = json.loads((output / paths.EVALUATION_FILE).read_text())
    gate = report["quality_gate"]
    assert gate["passed"] is False and gate["failed"] == ["silhouette"]
    assert re.search(r"silhouette 0\.\d{3} \(minimum 0\.99\)", gate["message"])
    assert "NumClusters=3 was set" in gate["message"]  # the model_dir fixture trains with num_clusters=3
    page = (output / paths.REPORT_FILE).read_text()
    run = rows_by_first_cell(parse(page).tables["run-parameters"])
    assert "MinSilhouette=0.99" in run["Parameters"][1] and "NumClusters=3" in run["Parameters"][1]
    assert "Currency=GBP" in run["Parameters"][1] and "TrainingSampleSize=200000" in run["Parameters"][1]
    assert run["Input"][1] == "s3://bucket/rfm/input/"
    assert "\u00a3" in page
def test_excluded_rows_and_quality_warnings_are_shown(features_frame: pd.DataFrame, model_meta: dict) -> None:
    quality = dict(QUALITY, rows_read=1200, rows_excluded=200, excluded_by_reason={"not_a_purchase_event": 200},
                   warnings=["the as-of date 2030-01-01 is 2188 days after the last transaction"])
    page = render_report(features_frame, model_meta, {}, quality, RUN_INFO)
    assert "Rows excluded (not purchases)" in page and "not_a_purchase_event" in page
    assert "Every row is accounted for: read = used + excluded + quarantined" in page
    assert "2188 days after the last transaction" in page


@pytest.mark.parametrize(("increment", "says"), [
    (None, None),
    ({"objects_added": 0, "objects_replaced": 0, "objects_removed": 0, "objects_unchanged": 23,
      "objects_redated": 0, "rebuild": False},
     "Incremental run: the history is unchanged (23 objects), so no row was read"),
    ({"objects_added": 1, "objects_replaced": 2, "objects_removed": 0, "objects_unchanged": 20,
      "objects_redated": 0, "rebuild": False},
     "the rows above are those of the objects 1 added, 2 replaced since the last run (20 unchanged objects not "
     "read again); the 600 customers are the whole history's"),
    ({"objects_added": 23, "objects_replaced": 0, "objects_removed": 0, "objects_unchanged": 0,
      "objects_redated": 0, "rebuild": True}, "Built from the whole history: every object was read (23 objects)"),
])
def test_an_incremental_run_says_what_its_rows_are(features_frame: pd.DataFrame, model_meta: dict,
                                                   evaluation: dict, increment: dict | None, says: str | None) -> None:
    quality = {**QUALITY, "increment": increment} if increment else QUALITY
    quality_html = section(render_report(features_frame, model_meta, evaluation, quality, RUN_INFO), "quality")
    if says is None:
        assert 'id="increment"' not in quality_html
    else:
        assert says in quality_html
