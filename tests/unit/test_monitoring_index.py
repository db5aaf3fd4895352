"""The report index: windows a person reads, both summary schemas, the trend charts' points, and
the history copied back from MLflow."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import pytest

from monitoring.index import (
    FOLDER_FORMAT,
    fetch_from_mlflow,
    format_window,
    main,
    read_entries,
    render_index,
    write_index,
)

SVG = "{http://www.w3.org/2000/svg}"
END = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


def summary_v1(
    end: datetime = END, *, last: int | None = None, drift: bool = False
) -> dict[str, Any]:
    """What monitoring/job.py writes today (schema version 1), a record window with ``last``."""
    return {
        "generated_at": end.isoformat(),
        "window": {
            "start": None if last else (end - timedelta(hours=24)).isoformat(),
            "end": end.isoformat(),
            "last_records": last,
        },
        "model": {"name": "emotitrack-sentiment", "version": "3", "run_id": "abc", "uri": "u"},
        "counts": {"reference": 600, "current": 500, "feedback": 60, "report_sample": 500},
        "dataset_drift": drift,
        "drift_share": 0.57 if drift else 0.14,
        "drift_share_threshold": 0.4,
        "drifted_columns": 4 if drift else 1,
        "columns": {},
        "predictions": {
            "reference_label_shares": {"negative": 0.5, "positive": 0.5},
            "current_label_shares": {"negative": 0.83, "positive": 0.17},
            "reference_mean_confidence": 0.9,
            "current_mean_confidence": 0.88,
        },
        "quality": {
            "feedback_rows": 60,
            "min_feedback": 50,
            "reference_accuracy": 0.88,
            "current_accuracy": 0.85,
        },
        "report_html": "/somewhere/report.html",
        "skipped_columns": {},
        "schema_version": 1,
        "mlflow_run_id": "",
    }


def summary_v2(end: datetime = END, **kwargs: Any) -> dict[str, Any]:
    """The next schema: separate verdicts, accuracy estimated from the confidences."""
    summary = summary_v1(end, **kwargs)
    summary["schema_version"] = 2
    summary["quality"] = {
        "feedback_rows": 10,
        "min_feedback": 50,
        "reference_accuracy": 0.88,
        "estimated_accuracy": 0.81,
        "estimated_accuracy_interval": [0.78, 0.84],
        "measured_accuracy": None,  # too little feedback
        "measured_accuracy_interval": None,
    }
    summary["verdicts"] = {
        "data_drift": {"detected": False, "reason": "1 of 7 columns drifted"},
        "prediction_drift": {"detected": True, "reason": "label shares moved"},
        "quality": {"detected": True, "reason": "estimated accuracy below reference"},
    }
    return summary


def write_reports(folder: Path, summaries: list[dict[str, Any]]) -> None:
    for summary in summaries:
        out = folder / datetime.fromisoformat(summary["generated_at"]).strftime(FOLDER_FORMAT)
        out.mkdir(parents=True)
        (out / "summary.json").write_text(json.dumps(summary))
        (out / "report.html").write_text("<p>report</p>")


def charts(page: str) -> list[ET.Element]:
    """Each inline SVG of the page, parsed as XML (so it is well-formed, too)."""
    svgs = []
    rest = page
    while "<svg" in rest:
        start = rest.index("<svg")
        end = rest.index("</svg>", start) + len("</svg>")
        svgs.append(ET.fromstring(rest[start:end]))  # noqa: S314 (the index we just wrote)
        rest = rest[end:]
    return svgs


def points(svg: ET.Element, series: str) -> list[ET.Element]:
    group = svg.find(f"{SVG}g[@data-series='{series}']")
    assert group is not None, series
    return group.findall(f"{SVG}circle")


@pytest.mark.parametrize(
    ("window", "shown"),
    [
        (
            {"start": "2026-12-01T10:00:00+00:00", "end": "2026-12-02T10:00:00+00:00"},
            "last 24 h, 2026-12-01 10:00 → 2026-12-02 10:00 UTC",
        ),
        (
            {"start": "2026-12-02T08:30:00+00:00", "end": "2026-12-02T10:00:00.123+00:00"},
            "last 1.5 h, 2026-12-02 08:30 → 2026-12-02 10:00 UTC",
        ),
        (  # another offset and a naive time: both shown in UTC
            {"start": "2026-12-01T11:00:00+01:00", "end": "2026-12-02T10:00:00"},
            "last 24 h, 2026-12-01 10:00 → 2026-12-02 10:00 UTC",
        ),
        (
            {"start": None, "end": "2026-12-02T10:00:00+00:00", "last_records": 500},
            "last 500 records, up to 2026-12-02 10:00 UTC",
        ),
        (
            {
                "start": "2026-12-01T22:15:00+00:00",
                "end": "2026-12-02T10:00:00+00:00",
                "last_records": 5000,
            },
            "last 5,000 records (2026-12-01 22:15 → 2026-12-02 10:00 UTC)",
        ),
        ({"end": "2026-12-02T10:00:00+00:00"}, "up to 2026-12-02 10:00 UTC"),
        ({"end": "2026-12-02T10:00:00+00:00", "batch_id": "reviews-12"}, "batch reviews-12"),
        ({"start": "not a time", "end": None}, "n/a"),
        (None, "n/a"),
    ],
)
def test_windows_read_as_a_person_would_say_them(window: Any, shown: str) -> None:
    assert format_window(window) == shown


def test_schema_1_summaries_are_read(tmp_path: Path) -> None:
    write_reports(tmp_path, [summary_v1(last=500, drift=True)])
    (entry,) = read_entries(tmp_path)
    assert entry.window == "last 500 records, up to 2026-12-02 10:00 UTC"
    assert entry.model == "emotitrack-sentiment v3" and entry.rows == 500
    assert entry.verdicts == {"data_drift": True, "prediction_drift": None, "quality": None}
    assert entry.measured_accuracy == 0.85 and entry.estimated_accuracy is None
    assert entry.label_shares == {"negative": 0.83, "positive": 0.17}
    page = write_index(tmp_path).read_text()
    row = page[page.index("<tr data-report") :]
    assert "None" not in row and "DRIFT" in row and row.count("n/a") == 3  # 2 verdicts, estimate


def test_schema_2_summaries_are_read(tmp_path: Path) -> None:
    write_reports(tmp_path, [summary_v2()])
    (entry,) = read_entries(tmp_path)
    assert entry.verdicts == {"data_drift": False, "prediction_drift": True, "quality": True}
    assert entry.estimated_accuracy == 0.81 and entry.estimated_interval == (0.78, 0.84)
    assert entry.measured_accuracy is None and entry.reference_accuracy == 0.88
    page = write_index(tmp_path).read_text()
    assert "81.0% <small>(78.0%&ndash;84.0%)</small>" in page
    assert 'title="label shares moved">DRIFT' in page and ">DEGRADED<" in page


def test_measured_accuracy_comes_with_its_interval(tmp_path: Path) -> None:
    summary = summary_v2()
    summary["quality"] |= {"measured_accuracy": 0.8, "measured_accuracy_interval": [0.7, 0.87]}
    write_reports(tmp_path, [summary])
    page = write_index(tmp_path).read_text()
    assert "80.0% <small>(70.0%&ndash;87.0%)</small>" in page
    _, accuracy, _ = charts(page)
    group = accuracy.find(f"{SVG}g[@data-series='measured_accuracy']")
    assert group is not None and len(group.findall(f"{SVG}line[@class='interval']")) == 1


@pytest.mark.parametrize(
    ("step", "label"),
    [
        (timedelta(seconds=20), "10:00:20"),
        (timedelta(hours=6), "12-02 16:00"),
        (timedelta(days=2), "12-04"),
    ],
)
def test_time_labels_fit_the_span(tmp_path: Path, step: timedelta, label: str) -> None:
    write_reports(tmp_path, [summary_v2(END + step * i) for i in range(3)])
    drift = charts(write_index(tmp_path).read_text())[0]
    assert label in [t.text for t in drift.findall(f"{SVG}text[@text-anchor='middle']")]


@pytest.mark.parametrize(
    "summary",
    [
        {},
        {"window": "24h", "model": None, "counts": [], "verdicts": {"quality": "yes"}},
        {"quality": {"estimated_accuracy": "high", "estimated_accuracy_interval": [0.1]}},
        {"drift_share": float("nan"), "predictions": {"current_label_shares": {"a": None}}},
    ],
)
def test_missing_or_odd_keys_show_na(tmp_path: Path, summary: dict[str, Any]) -> None:
    folder = tmp_path / "20261202T100000Z"
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps(summary))
    page = write_index(tmp_path).read_text()
    assert "2026-12-02 10:00 UTC" in page  # the time is the folder's
    assert page.count("n/a") >= 8


def test_an_unreadable_summary_is_a_row_that_says_so(tmp_path: Path) -> None:
    write_reports(tmp_path, [summary_v1()])
    broken = tmp_path / "20261203T100000Z"
    broken.mkdir()
    (broken / "summary.json").write_text("{not json")
    (broken / "report.html").write_text("<p>r</p>")
    page = write_index(tmp_path).read_text()
    assert "summary.json unreadable" in page
    assert page.index('<tr data-report="20261203T100000Z"') < page.index(
        '<tr data-report="20261202T100000Z"'
    )


def test_rows_newest_first_with_links_to_what_exists(tmp_path: Path) -> None:
    write_reports(tmp_path, [summary_v1(END), summary_v2(END + timedelta(hours=6))])
    (tmp_path / "20261202T100000Z" / "report.html").unlink()
    (tmp_path / "20261202T160000Z" / "quality.html").write_text("<p>q</p>")
    (tmp_path / ".staging-x").mkdir()  # the job's staging folder is no report
    page = write_index(tmp_path).read_text()
    newer = page.index('<tr data-report="20261202T160000Z"')
    assert newer < page.index('<tr data-report="20261202T100000Z"')
    assert "20261202T160000Z/report.html" in page and "20261202T160000Z/quality.html" in page
    assert "20261202T100000Z/report.html" not in page and "20261202T100000Z/summary.json" in page
    assert ".staging-x" not in page and "2 reports" in page


def test_text_from_summaries_is_escaped(tmp_path: Path) -> None:
    summary = summary_v2()
    summary["model"]["name"] = "<script>alert(1)</script>"
    summary["verdicts"]["quality"]["reason"] = '"><img src=x onerror=alert(1)>'
    write_reports(tmp_path, [summary])
    page = write_index(tmp_path).read_text()
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_the_page_needs_nothing_from_the_network(tmp_path: Path) -> None:
    write_reports(tmp_path, [summary_v1(), summary_v2(END + timedelta(hours=6))])
    page = write_index(tmp_path).read_text()
    assert "<script" not in page and "src=" not in page and "@import" not in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page


def test_charts_have_a_point_per_report_and_figure(tmp_path: Path) -> None:
    summaries = [
        summary_v1(END, drift=False),  # no estimate
        summary_v2(END + timedelta(hours=6)),
        summary_v2(END + timedelta(hours=18), last=500),
    ]
    summaries[2]["drift_share"] = 0.71
    write_reports(tmp_path, summaries)
    drift, accuracy, shares = charts(write_index(tmp_path).read_text())
    drift_points = points(drift, "drift_share")
    assert [p.get("data-report") for p in drift_points] == [
        "20261202T100000Z", "20261202T160000Z", "20261203T040000Z",
    ]  # fmt: skip
    assert [float(p.get("data-value", "")) for p in drift_points] == [0.14, 0.14, 0.71]
    xs = [float(p.get("cx", "")) for p in drift_points]
    ys = [float(p.get("cy", "")) for p in drift_points]
    assert xs[0] < xs[1] < xs[2] and xs[2] - xs[1] == pytest.approx(
        2 * (xs[1] - xs[0]), abs=0.2
    )  # by time
    assert ys[0] == ys[1] > ys[2]  # higher share, higher on the page (smaller y)
    assert "71.0%" in (drift_points[2].findtext(f"{SVG}title") or "")
    assert not points(drift, "drift_share_threshold")  # a reference line, no points
    assert len(points(accuracy, "estimated_accuracy")) == 2  # schema 1 has no estimate
    assert len(points(accuracy, "measured_accuracy")) == 1  # schema 2 windows lack feedback
    assert len(accuracy.findall(f".//{SVG}line[@class='interval']")) == 2
    assert len(points(shares, "label_share:negative")) == 3
    assert len(points(shares, "label_share:positive")) == 3


@pytest.mark.parametrize("count", [1, 100])
def test_charts_stay_readable_from_one_report_to_a_hundred(tmp_path: Path, count: int) -> None:
    write_reports(tmp_path, [summary_v2(END + timedelta(hours=6 * i)) for i in range(count)])
    page = write_index(tmp_path).read_text()
    for svg in charts(page):
        width = float(svg.get("width", ""))
        axis_labels = [t.text for t in svg.findall(f"{SVG}text[@text-anchor='middle']")]
        assert 1 <= len(axis_labels) <= 6  # time labels never pile up
        for point in svg.iter(f"{SVG}circle"):
            assert 0 < float(point.get("cx", "")) < width
    drift_points = points(charts(page)[0], "drift_share")
    assert len(drift_points) == count
    assert len({p.get("cx") for p in drift_points}) == count  # no two reports on one spot
    if count == 1:
        assert "11-01" not in page and "12-02 10:00" in page


def test_an_empty_folder_gets_an_index_that_says_so(tmp_path: Path) -> None:
    page = write_index(tmp_path / "reports").read_text()
    assert "no reports yet" in page and "<svg" not in page
    assert render_index([]).count("<tr>") == 2  # the header and the one that says so


# ---------------------------------------------------------------------------- history from MLflow


def log_like_the_job(summary: dict[str, Any], folder: Path, quality: bool = False) -> str:
    """A monitoring run as monitoring/job.py's ``_log_to_mlflow`` logs it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.html").write_text(f"<p>report of {summary['generated_at']}</p>")
    if quality:
        (folder / "quality.html").write_text("<p>quality</p>")
    mlflow.set_experiment("emotitrack-monitoring")
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(folder / "report.html"), "drift")
        if quality:
            mlflow.log_artifact(str(folder / "quality.html"), "drift")
        mlflow.log_dict(summary, "drift/summary.json")
    return run.info.run_id


def test_history_is_copied_back_from_mlflow(tracking_uri: str, tmp_path: Path) -> None:
    runs = [
        log_like_the_job(summary_v1(END + timedelta(hours=6 * i)), tmp_path / f"run{i}", i == 2)
        for i in range(3)
    ]
    mlflow.set_experiment("emotitrack-monitoring")
    with mlflow.start_run():  # a run that failed before logging its summary
        pass
    reports = tmp_path / "reports"
    got = fetch_from_mlflow(reports, tracking_uri, "emotitrack-monitoring", html_reports=2)
    assert (got.runs, got.fetched, got.present, got.without_summary) == (4, 3, 0, 1)
    newest, middle, oldest = (
        reports / (END + timedelta(hours=h)).strftime(FOLDER_FORMAT) for h in (12, 6, 0)
    )
    assert (newest / "quality.html").read_text() == "<p>quality</p>"
    assert "report of" in (middle / "report.html").read_text()
    assert not (oldest / "report.html").exists()  # beyond --html-reports: the summary only
    assert json.loads((oldest / "summary.json").read_text())["mlflow_run_id"] == runs[0]
    again = fetch_from_mlflow(reports, tracking_uri, "emotitrack-monitoring")
    assert (again.fetched, again.present) == (0, 3)
    assert not [p for p in reports.iterdir() if p.name.startswith(".")]  # no leftovers
    entries = read_entries(reports)
    assert [e.folder for e in entries] == [newest.name, middle.name, oldest.name]


def test_no_experiment_yet_is_an_empty_history(tracking_uri: str, tmp_path: Path) -> None:
    got = fetch_from_mlflow(tmp_path / "reports", tracking_uri, "emotitrack-monitoring")
    assert (got.runs, got.fetched) == (0, 0)


def test_the_command_rebuilds_and_says_where(
    tracking_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_like_the_job(summary_v2(), tmp_path / "run")
    reports = tmp_path / "reports"
    assert main(["--from-mlflow", "--reports-dir", str(reports)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"index of 1 report: {reports / 'index.html'}")
    assert "1 runs, 1 copied, 0 already here" in line
    assert "20261202T100000Z/report.html" in (reports / "index.html").read_text()


def test_the_command_refuses_bad_input_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--max-reports", "0", "--reports-dir", str(tmp_path)]) == 2
    assert "--max-reports 0: must be at least 1" in capsys.readouterr().err
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://user:secret@127.0.0.1:9")
    assert main(["--from-mlflow", "--reports-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: MLflow at http://127.0.0.1:9") and "secret" not in err
    assert "Traceback" not in err
