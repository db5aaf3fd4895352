"""The report index: every drift report in a reports folder, newest first, with the trends of
drift share, accuracy and label shares drawn as inline SVG (renders offline, no script), and the
command that rebuilds the folder from the reports logged to MLflow (the history between runs)."""

from __future__ import annotations

import argparse
import html
import json
import math
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import ValidationError

from emotitrack.core.options import EXIT_BAD_INPUT, parse_int, report_invalid_settings
from emotitrack.core.progress import configure_logging, step
from monitoring.settings import MonitoringSettings

# The names monitoring/job.py writes and logs (job.py imports them from here).
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
QUALITY_FILE = "quality.html"
INDEX_FILE = "index.html"
MLFLOW_ARTIFACT_DIR = "drift"  # the artifact folder of each monitoring run
MLFLOW_RUN_FILE = "mlflow-run.json"  # written beside a summary fetched from MLflow
FOLDER_FORMAT = "%Y%m%dT%H%M%SZ"  # a report folder's name: its window's end, UTC
NA = "n/a"
VERDICTS = {  # summary key -> (column title, word when detected)
    "data_drift": ("data drift", "DRIFT"),
    "prediction_drift": ("prediction drift", "DRIFT"),
    "quality": ("quality", "DEGRADED"),
}
# Okabe-Ito: told apart with the common colour-vision deficiencies
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")


@dataclass(frozen=True)
class ReportEntry:
    """One report as the index shows it; every figure ``None`` when the summary lacks it."""

    folder: str
    generated_at: datetime | None
    window: str
    model: str
    rows: int | None
    verdicts: dict[str, bool | None]
    reasons: dict[str, str]
    drift_share: float | None
    drift_share_threshold: float | None
    estimated_accuracy: float | None
    estimated_interval: tuple[float, float] | None
    measured_accuracy: float | None
    measured_interval: tuple[float, float] | None
    reference_accuracy: float | None
    label_shares: dict[str, float]
    reference_label_shares: dict[str, float]
    files: frozenset[str] = frozenset()
    mlflow_run_url: str | None = None
    problem: str | None = None  # why the summary could not be read


# ---------------------------------------------------------------------------- reading summaries


def _at(data: Any, *keys: str) -> Any:
    """``data[k1][k2]...``, or None where a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def _shares(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    return {str(k): share for k, v in value.items() if (share := _number(v)) is not None}


def _interval(value: Any) -> tuple[float, float] | None:
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    low, high = _number(value[0]), _number(value[1])
    return (low, high) if low is not None and high is not None else None


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


def format_window(window: Any) -> str:
    """The window as a person reads it: ``last 24 h, 2026-12-01 10:00 → 2026-12-02 10:00 UTC``
    or ``last 500 records, up to 2026-12-02 10:00 UTC`` (with the first record's time when the
    summary gives it)."""
    if not isinstance(window, dict):
        return NA
    batch = window.get("batch_id")
    if isinstance(batch, str) and batch:
        return f"batch {batch}"
    start = _time(window.get("start")) or _time(window.get("first_record"))
    end = _time(window.get("end"))
    records = window.get("last_records")
    if isinstance(records, int) and not isinstance(records, bool):
        count = f"last {records:,} record{'s' if records != 1 else ''}"
        if start and end:
            return f"{count} ({_stamp(start)} → {_stamp(end)} UTC)"
        return f"{count}, up to {_stamp(end)} UTC" if end else count
    if start and end:
        hours = _number(window.get("hours")) or (end - start).total_seconds() / 3600
        return f"last {round(hours, 2):g} h, {_stamp(start)} → {_stamp(end)} UTC"
    if end:
        return f"up to {_stamp(end)} UTC"
    return NA


def read_entry(folder: Path) -> ReportEntry:
    """The index's view of one report folder; a missing or unreadable summary gives a row that
    says so rather than an error."""
    files = frozenset(p.name for p in folder.iterdir() if p.is_file())
    try:
        summary = json.loads((folder / SUMMARY_FILE).read_text())
    except (OSError, ValueError) as exc:
        return _unreadable(folder.name, files, f"{SUMMARY_FILE} unreadable: {exc}")
    if not isinstance(summary, dict):
        return _unreadable(folder.name, files, f"{SUMMARY_FILE} holds no object")
    run_url = None
    if MLFLOW_RUN_FILE in files:
        try:
            run_url = _at(json.loads((folder / MLFLOW_RUN_FILE).read_text()), "url")
        except (OSError, ValueError):
            run_url = None
    return entry_from_summary(
        folder.name, summary, files, run_url if isinstance(run_url, str) else None
    )


def _unreadable(folder: str, files: frozenset[str], problem: str) -> ReportEntry:
    return ReportEntry(
        folder=folder, generated_at=_folder_time(folder), window=NA, model=NA, rows=None,
        verdicts=dict.fromkeys(VERDICTS), reasons={}, drift_share=None, drift_share_threshold=None,
        estimated_accuracy=None, estimated_interval=None, measured_accuracy=None,
        measured_interval=None, reference_accuracy=None, label_shares={},
        reference_label_shares={}, files=files, problem=problem,
    )  # fmt: skip


def _folder_time(folder: str) -> datetime | None:
    try:
        return datetime.strptime(folder, FOLDER_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def entry_from_summary(
    folder: str,
    summary: dict[str, Any],
    files: frozenset[str] = frozenset(),
    run_url: str | None = None,
) -> ReportEntry:
    """Schema version 1 (``dataset_drift``; ``quality.current_accuracy`` measured on feedback)
    and its successor (``verdicts``; estimated and measured accuracy) alike."""
    quality = _at(summary, "quality")
    verdicts: dict[str, bool | None] = {
        name: _flag(_at(summary, "verdicts", name, "detected")) for name in VERDICTS
    }
    if verdicts["data_drift"] is None:  # schema 1: the dataset drift verdict was the only one
        verdicts["data_drift"] = _flag(_at(summary, "dataset_drift"))
    reasons = {
        name: reason
        for name in VERDICTS
        if isinstance(reason := _at(summary, "verdicts", name, "reason"), str)
    }
    measured = _number(_at(quality, "measured_accuracy"))
    if measured is None:
        measured = _number(_at(quality, "current_accuracy"))
    name, version = _at(summary, "model", "name"), _at(summary, "model", "version")
    model = f"{name} v{version}" if name is not None and version is not None else str(name or NA)
    rows = _at(summary, "counts", "current")
    return ReportEntry(
        folder=folder,
        generated_at=_time(_at(summary, "generated_at"))
        or _time(_at(summary, "window", "end"))
        or _folder_time(folder),
        window=format_window(_at(summary, "window")),
        model=model,
        rows=rows if isinstance(rows, int) and not isinstance(rows, bool) else None,
        verdicts=verdicts,
        reasons=reasons,
        drift_share=_number(_at(summary, "drift_share")),
        drift_share_threshold=_number(_at(summary, "drift_share_threshold")),
        estimated_accuracy=_number(_at(quality, "estimated_accuracy")),
        estimated_interval=_interval(_at(quality, "estimated_accuracy_interval")),
        measured_accuracy=measured,
        measured_interval=_interval(_at(quality, "measured_accuracy_interval")),
        reference_accuracy=_number(_at(quality, "reference_accuracy")),
        label_shares=_shares(_at(summary, "predictions", "current_label_shares")),
        reference_label_shares=_shares(_at(summary, "predictions", "reference_label_shares")),
        files=files,
        mlflow_run_url=run_url,
    )


def read_entries(reports_dir: Path) -> list[ReportEntry]:
    """Every report folder (one holding a summary, or the report it belongs to), newest first."""
    folders = [
        p
        for p in reports_dir.iterdir()
        if p.is_dir() and not p.name.startswith(".") and any(
            (p / name).exists() for name in (SUMMARY_FILE, REPORT_FILE)
        )
    ] if reports_dir.is_dir() else []  # fmt: skip
    entries = [read_entry(folder) for folder in folders]
    oldest = datetime.min.replace(tzinfo=UTC)
    return sorted(entries, key=lambda e: (e.generated_at or oldest, e.folder), reverse=True)


# ---------------------------------------------------------------------------- the chart


@dataclass(frozen=True)
class Series:
    """One line of a chart: a value per report (None: not known), drawn with points unless it is
    a reference line."""

    key: str
    label: str
    values: list[float | None]
    colour: str
    points: bool = True
    dashed: bool = False
    intervals: list[tuple[float, float] | None] = field(default_factory=list)


WIDTH, HEIGHT = 860, 230
LEFT, RIGHT, TOP, BOTTOM = 52, 190, 30, 34  # room for the axis labels and the legend


def chart_svg(
    title: str, entries: Sequence[ReportEntry], series: Sequence[Series], floor: float = 0.0
) -> str:
    """A line chart from ``floor`` to 100 % of ``series`` over ``entries`` (oldest first): a point
    per report and series, each with a tooltip (its ``<title>``); readable from one report to
    hundreds."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    xs = _x_positions(entries, plot_w)
    radius = 3.5 if len(entries) <= 40 else 2.2

    def y(value: float) -> float:
        return TOP + plot_h * (1 - (min(max(value, floor), 1.0) - floor) / (1.0 - floor))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'aria-label="{html.escape(title)}">',
        f'<text x="{LEFT}" y="18" class="chart-title">{html.escape(title)}</text>',
    ]
    for tick in (floor + (1.0 - floor) * i / 4 for i in range(5)):
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(tick):.1f}" '
            f'y2="{y(tick):.1f}"/><text class="axis" x="{LEFT - 6}" y="{y(tick) + 4:.1f}" '
            f'text-anchor="end">{tick:.{0 if floor == 0 else 1}%}</text>'
        )
    for x, label in _x_ticks(entries, xs):
        parts.append(
            f'<text class="axis" x="{LEFT + x:.1f}" y="{HEIGHT - 12}" '
            f'text-anchor="middle">{html.escape(label)}</text>'
        )
    for line in series:
        parts.append(f'<g class="series" data-series="{html.escape(line.key)}">')
        dash = ' stroke-dasharray="6 4"' if line.dashed else ""
        for run in _runs(line.values):
            if len(run) > 1 or not line.points:
                coordinates = " ".join(f"{LEFT + xs[i]:.1f},{y(v):.1f}" for i, v in run)
                if len(run) == 1:  # a lone reference value: a short level mark
                    i, v = run[0]
                    coordinates = (
                        f"{LEFT + xs[i] - 12:.1f},{y(v):.1f} {LEFT + xs[i] + 12:.1f},{y(v):.1f}"
                    )
                parts.append(
                    f'<polyline fill="none" stroke="{line.colour}" stroke-width="1.6"{dash} '
                    f'points="{coordinates}"/>'
                )
        for i, bounds in enumerate(line.intervals):
            if bounds is not None:
                parts.append(
                    f'<line class="interval" stroke="{line.colour}" stroke-width="1.2" '
                    f'opacity="0.6" x1="{LEFT + xs[i]:.1f}" x2="{LEFT + xs[i]:.1f}" '
                    f'y1="{y(bounds[0]):.1f}" y2="{y(bounds[1]):.1f}"/>'
                )
        if line.points:
            for i, value in enumerate(line.values):
                if value is None:
                    continue
                entry = entries[i]
                when = _stamp(entry.generated_at) if entry.generated_at else entry.folder
                parts.append(
                    f'<circle class="point" data-report="{html.escape(entry.folder)}" '
                    f'data-value="{value:.4f}" cx="{LEFT + xs[i]:.1f}" cy="{y(value):.1f}" '
                    f'r="{radius}" fill="{line.colour}"><title>{html.escape(line.label)}: '
                    f"{value:.1%} ({html.escape(when)})</title></circle>"
                )
        parts.append("</g>")
    for n, line in enumerate(series):  # the legend, right of the plot
        ly = TOP + 8 + 18 * n
        dash = ' stroke-dasharray="6 4"' if line.dashed else ""
        parts.append(
            f'<line x1="{WIDTH - RIGHT + 14}" x2="{WIDTH - RIGHT + 38}" y1="{ly}" y2="{ly}" '
            f'stroke="{line.colour}" stroke-width="2"{dash}/><text class="legend" '
            f'x="{WIDTH - RIGHT + 44}" y="{ly + 4}">{html.escape(line.label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _x_positions(entries: Sequence[ReportEntry], plot_w: float) -> list[float]:
    """By time when every report has one and they differ; else evenly spaced; one report in the
    middle."""
    if len(entries) == 1:
        return [plot_w / 2]
    pad = 8.0
    times = [e.generated_at for e in entries]
    if all(times) and times[0] != times[-1]:
        first, span = times[0], (times[-1] - times[0]).total_seconds()  # type: ignore[operator]
        return [
            pad + (plot_w - 2 * pad) * (t - first).total_seconds() / span  # type: ignore[operator]
            for t in times
        ]
    return [pad + (plot_w - 2 * pad) * i / (len(entries) - 1) for i in range(len(entries))]


def _x_ticks(entries: Sequence[ReportEntry], xs: Sequence[float]) -> list[tuple[float, str]]:
    """At most six labels, on reports spread over the axis."""
    if not entries:
        return []
    picks = sorted({round(i * (len(entries) - 1) / 5) for i in range(6)})
    times = [e.generated_at for e in entries if e.generated_at]
    span = (times[-1] - times[0]).total_seconds() if len(times) > 1 else 0.0
    # days apart: the date says it; minutes apart: the seconds tell the reports apart
    shape = "%m-%d" if span >= 3 * 86400 else "%H:%M:%S" if 0 < span < 3600 else "%m-%d %H:%M"
    ticks = []
    for i in picks:
        moment = entries[i].generated_at
        label = moment.strftime(shape) if moment else str(i + 1)
        ticks.append((xs[i], label))
    return ticks


def _runs(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """Consecutive known values: a line breaks where a report lacks the figure."""
    runs: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = []
    for i, value in enumerate(values):
        if value is None:
            if current:
                runs.append(current)
            current = []
        else:
            current.append((i, value))
    if current:
        runs.append(current)
    return runs


def trend_charts(entries: Sequence[ReportEntry]) -> list[str]:
    """The three charts of the index over ``entries`` (oldest first)."""
    drift = [
        Series("drift_share", "drift share", [e.drift_share for e in entries], PALETTE[0]),
        Series(
            "drift_share_threshold",
            "threshold",
            [e.drift_share_threshold for e in entries],
            PALETTE[6],
            points=False,
            dashed=True,
        ),
    ]
    accuracy = [
        Series(
            "estimated_accuracy",
            "estimated accuracy",
            [e.estimated_accuracy for e in entries],
            PALETTE[0],
            intervals=[e.estimated_interval for e in entries],
        ),
        Series(
            "measured_accuracy",
            "measured accuracy",
            [e.measured_accuracy for e in entries],
            PALETTE[1],
            intervals=[e.measured_interval for e in entries],
        ),
        Series(
            "reference_accuracy",
            "reference accuracy",
            [e.reference_accuracy for e in entries],
            PALETTE[6],
            points=False,
            dashed=True,
        ),
    ]
    known = [
        v
        for e in entries
        for v in (e.estimated_accuracy, e.measured_accuracy, e.reference_accuracy)
        + (e.estimated_interval or ())
        + (e.measured_interval or ())
        if v is not None
    ]
    # accuracies sit near the top: zoom in, to the tenth below the lowest
    floor = max(0.0, min(0.9, math.floor((min(known, default=0.0) - 0.02) * 10) / 10))
    labels = sorted({label for e in entries for label in e.label_shares})
    shares = []
    for n, label in enumerate(labels):
        colour = PALETTE[(n + 2) % 6]
        shares.append(
            Series(
                f"label_share:{label}",
                label,
                # a label missing from a report's shares was never predicted in its window
                [e.label_shares.get(label, 0.0) if e.label_shares else None for e in entries],
                colour,
            )
        )
        shares.append(
            Series(
                f"reference_label_share:{label}",
                f"{label} (reference)",
                [e.reference_label_shares.get(label) for e in entries],
                colour,
                points=False,
                dashed=True,
            )
        )
    return [
        chart_svg("Drift share: columns drifted (data drift)", entries, drift),
        chart_svg(
            "Accuracy: estimated from confidences (with interval), measured on feedback",
            entries,
            accuracy,
            floor,
        ),
        chart_svg("Predicted label shares", entries, shares),
    ]


# ---------------------------------------------------------------------------- the page


def _percent(value: float | None) -> str:
    return NA if value is None else f"{value:.1%}"


def _with_interval(value: float | None, interval: tuple[float, float] | None) -> str:
    if value is None or interval is None:
        return _percent(value)
    return f"{value:.1%} <small>({interval[0]:.1%}&ndash;{interval[1]:.1%})</small>"


def _verdict_cell(entry: ReportEntry, name: str) -> str:
    detected = entry.verdicts.get(name)
    word = VERDICTS[name][1] if detected else ("ok" if name == "quality" else "no drift")
    text, css = (NA, "na") if detected is None else (word, "bad" if detected else "ok")
    reason = entry.reasons.get(name)
    tip = f' title="{html.escape(reason)}"' if reason else ""
    return f'<td class="{css}"{tip}>{text}</td>'


def _link(folder: str, name: str, text: str, files: frozenset[str]) -> str:
    if name not in files:
        return ""
    return f'<a href="{quote(folder)}/{quote(name)}">{text}</a>'


def _row(entry: ReportEntry) -> str:
    when = _stamp(entry.generated_at) + " UTC" if entry.generated_at else entry.folder
    links = [
        _link(entry.folder, REPORT_FILE, "report", entry.files),
        _link(entry.folder, QUALITY_FILE, "quality", entry.files),
        _link(entry.folder, SUMMARY_FILE, "summary.json", entry.files),
    ]
    if REPORT_FILE not in entry.files and entry.mlflow_run_url:
        links.insert(0, f'<a href="{html.escape(entry.mlflow_run_url)}">report in MLflow</a>')
    problem = f' <span class="problem">{html.escape(entry.problem)}</span>' if entry.problem else ""
    return (
        f'<tr data-report="{html.escape(entry.folder)}"><td>{html.escape(when)}{problem}</td>'
        f"<td>{html.escape(entry.window)}</td><td>{html.escape(entry.model)}</td>"
        f"<td class='num'>{NA if entry.rows is None else f'{entry.rows:,}'}</td>"
        + "".join(_verdict_cell(entry, name) for name in VERDICTS)
        + f"<td class='num'>{_percent(entry.drift_share)}</td><td class='num'>"
        f"{_with_interval(entry.estimated_accuracy, entry.estimated_interval)}</td>"
        f"<td class='num'>{_with_interval(entry.measured_accuracy, entry.measured_interval)}</td>"
        f"<td>{' · '.join(link for link in links if link) or NA}</td></tr>"
    )


def render_index(entries: Sequence[ReportEntry], generated: datetime | None = None) -> str:
    """The page: charts over time, then the table (``entries`` newest first)."""
    oldest_first = list(reversed(entries))
    charts = (
        "\n".join(f"<figure>{svg}</figure>" for svg in trend_charts(oldest_first))
        if entries
        else ""
    )
    rows = (
        "\n".join(_row(e) for e in entries)
        or f"<tr><td colspan='{len(HEADERS)}'>no reports yet</td></tr>"
    )
    moment = generated or datetime.now(UTC)
    return INDEX_TEMPLATE.format(
        count=len(entries),
        plural="" if len(entries) == 1 else "s",
        updated=_stamp(moment),
        charts=charts,
        headers="".join(f"<th>{h}</th>" for h in HEADERS),
        rows=rows,
    )


def write_index(reports_dir: Path) -> Path:
    """``index.html`` in ``reports_dir``: every report with its window, verdicts and trends,
    newest first. Written whole (temporary file, then rename)."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    page = reports_dir / INDEX_FILE
    staging = reports_dir / f".{INDEX_FILE}.tmp"
    staging.write_text(render_index(read_entries(reports_dir)), encoding="utf-8")
    staging.replace(page)
    return page


HEADERS = (
    "report", "window", "model", "rows", "data drift", "prediction drift", "quality",
    "drift share", "estimated accuracy", "measured accuracy", "files",
)  # fmt: skip
INDEX_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>EmotiTrack drift reports</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
figure {{ margin: 0 0 1rem 0; }} svg.chart {{ max-width: 100%; height: auto; }}
.chart-title {{ font-size: 14px; font-weight: 600; fill: #222; }}
.axis, .legend {{ font-size: 11px; fill: #444; }} .grid {{ stroke: #e3e3e3; }}
table {{ border-collapse: collapse; font-size: .9rem; }}
td, th {{ padding: .3rem .5rem; border-bottom: 1px solid #ddd; text-align: left; }}
td.num {{ text-align: right; white-space: nowrap; }} td:first-child {{ white-space: nowrap; }}
td:nth-child(2) {{ min-width: 13em; }}
td.bad {{ background: #fde8e8; font-weight: 600; }}
td.ok {{ background: #eaf7ea; }} td.na {{ color: #888; }} .problem {{ color: #b00; }}
</style></head><body>
<h1>EmotiTrack drift reports</h1>
<p>Live traffic from the prediction log compared with the model's training reference:
{count} report{plural}, newest first; index updated {updated} UTC. Hover a point for its value.</p>
{charts}
<table><thead><tr>{headers}</tr></thead>
<tbody>
{rows}
</tbody></table></body></html>
"""


# ---------------------------------------------------------------------------- history from MLflow


class HistoryUnavailable(RuntimeError):
    """MLflow could not be read; the message names the tracking server and the problem."""


@dataclass(frozen=True)
class Fetched:
    runs: int  # monitoring runs seen
    fetched: int  # report folders written
    present: int  # already in the folder
    without_summary: int  # runs that logged no summary (failed part-way)


def fetch_from_mlflow(
    reports_dir: Path,
    tracking_uri: str,
    experiment: str,
    *,
    max_reports: int | None = None,
    html_reports: int | None = None,
) -> Fetched:
    """Copy the reports logged to MLflow's ``experiment`` into ``reports_dir`` (one folder each,
    named as the job names them; folders already there are kept). Every summary is fetched; the
    HTML only of the newest ``html_reports`` runs (None: all), older rows link to their run."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    try:
        found = client.get_experiment_by_name(experiment)
        if found is None:  # no report logged yet: an empty history, not an error
            return Fetched(0, 0, 0, 0)
        runs = _monitoring_runs(client, found.experiment_id, max_reports)
    except MlflowException as exc:
        raise HistoryUnavailable(f"MLflow at {_redacted(tracking_uri)}: {_problem(exc)}") from exc
    reports_dir.mkdir(parents=True, exist_ok=True)
    fetched = present = missing = 0
    for run in runs:
        run_id = run.info.run_id
        newest = html_reports is None or fetched + present < html_reports
        try:
            logged = {Path(f.path).name for f in client.list_artifacts(run_id, MLFLOW_ARTIFACT_DIR)}
            if SUMMARY_FILE not in logged:
                missing += 1  # a run that failed before logging its summary
                continue
            with tempfile.TemporaryDirectory(dir=reports_dir, prefix=".fetch-") as tmp:
                staging = Path(tmp) / "report"
                staging.mkdir()
                wanted = [SUMMARY_FILE]
                if newest:
                    wanted += [name for name in (REPORT_FILE, QUALITY_FILE) if name in logged]
                summary = json.loads(_download(client, run_id, SUMMARY_FILE, Path(tmp)).read_text())
                moment = _time(_at(summary, "generated_at")) or datetime.fromtimestamp(
                    run.info.start_time / 1000, UTC
                )
                final = reports_dir / moment.strftime(FOLDER_FORMAT)
                if (final / SUMMARY_FILE).is_file():
                    present += 1
                    continue
                for name in wanted[1:]:
                    _download(client, run_id, name, Path(tmp)).rename(staging / name)
                if isinstance(summary, dict) and not summary.get("mlflow_run_id"):
                    summary["mlflow_run_id"] = run_id  # logged before the run id was known
                (staging / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
                record = {
                    "run_id": run_id,
                    "experiment_id": found.experiment_id,
                    "url": _run_url(tracking_uri, found.experiment_id, run_id),
                }
                (staging / MLFLOW_RUN_FILE).write_text(json.dumps(record, indent=2))
                if final.exists():  # a folder without a summary: an interrupted earlier copy
                    shutil.rmtree(final)
                staging.rename(final)
                fetched += 1
        except MlflowException as exc:
            raise HistoryUnavailable(
                f"MLflow at {_redacted(tracking_uri)}, run {run_id}: {_problem(exc)}"
            ) from exc
        except ValueError:  # a summary that is not JSON: counted, not copied
            missing += 1
    return Fetched(len(runs), fetched, present, missing)


def _download(client: Any, run_id: str, name: str, into: Path) -> Path:
    return Path(client.download_artifacts(run_id, f"{MLFLOW_ARTIFACT_DIR}/{name}", str(into)))


def _monitoring_runs(client: Any, experiment_id: str, max_reports: int | None) -> list[Any]:
    """The experiment's runs, newest first, page by page up to ``max_reports``."""
    runs: list[Any] = []
    token = None
    while max_reports is None or len(runs) < max_reports:
        page = client.search_runs(
            [experiment_id],
            order_by=["attributes.start_time DESC"],
            max_results=min(1000, max_reports - len(runs)) if max_reports else 1000,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            break
    return runs


def _problem(exc: Any) -> str:
    """An MLflow error's first line, without the credentials its URLs may carry."""
    lines = str(getattr(exc, "message", exc)).strip().splitlines()
    return re.sub(r"//[^/\s@]+@", "//", lines[0] if lines else type(exc).__name__)


def _redacted(uri: str) -> str:
    """The URI without user and password."""
    parts = urlsplit(uri)
    if parts.username or parts.password:
        port = f":{parts.port}" if parts.port else ""
        parts = parts._replace(netloc=f"{parts.hostname or ''}{port}")
    return urlunsplit(parts)


def _run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI, when the tracking URI is a server's."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return f"{_redacted(tracking_uri).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


# ---------------------------------------------------------------------------- the command


DESCRIPTION = (
    "Write index.html in the reports folder: every report newest first, with charts of drift "
    "share, accuracy and label shares over time. With --from-mlflow, first copy the reports "
    "logged to the monitoring experiment that the folder lacks (the history between runs)."
)


def add_index_arguments(parser: argparse.ArgumentParser, settings: MonitoringSettings) -> None:
    parser.add_argument(
        "--reports-dir", type=Path, default=settings.reports_dir, help="the reports folder"
    )
    parser.add_argument(
        "--from-mlflow",
        action="store_true",
        help="first copy the reports logged to MLflow (the monitoring experiment) that the "
        "folder lacks: the history between scheduled runs",
    )
    parser.add_argument(
        "--experiment", default=settings.monitoring_experiment, help="MLflow experiment of reports"
    )
    parser.add_argument(
        "--max-reports",
        type=parse_int,
        default=None,
        help="read the newest N runs at most (unset: all)",
    )
    parser.add_argument(
        "--html-reports",
        type=parse_int,
        default=20,
        help="fetch the HTML of the newest N runs only (each is a few MB); older rows link to "
        "their MLflow run. -1: all",
    )


def add_monitor_index_command(commands: argparse._SubParsersAction) -> None:
    """``emotitrack monitor-index``, registered by the monitoring CLI."""
    settings = MonitoringSettings()
    parser = commands.add_parser(
        "monitor-index",
        help="rebuild the drift report index (optionally from the reports logged to MLflow)",
        description=DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_index_arguments(parser, settings)
    parser.set_defaults(handler=lambda args: run_index_command(args, settings))


def run_index_command(args: argparse.Namespace, settings: MonitoringSettings) -> int:
    if args.max_reports is not None and args.max_reports < 1:
        print(f"error: --max-reports {args.max_reports}: must be at least 1", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.html_reports < -1:
        print(
            f"error: --html-reports {args.html_reports}: 0 or more, or -1 for all", file=sys.stderr
        )
        return EXIT_BAD_INPUT
    history = ""
    if args.from_mlflow:
        try:
            with step(f"copying the reports of MLflow experiment {args.experiment!r}"):
                got = fetch_from_mlflow(
                    args.reports_dir,
                    settings.tracking_uri,
                    args.experiment,
                    max_reports=args.max_reports,
                    html_reports=None if args.html_reports == -1 else args.html_reports,
                )
        except HistoryUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except OSError as exc:
            print(f"error: cannot write in {args.reports_dir}: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        history = (
            f"; from MLflow ({_redacted(settings.tracking_uri)}, experiment {args.experiment!r}): "
            f"{got.runs} runs, {got.fetched} copied, {got.present} already here"
            + (f", {got.without_summary} without a summary" if got.without_summary else "")
        )
    try:
        page = write_index(args.reports_dir)
    except OSError as exc:
        print(f"error: cannot write the index in {args.reports_dir}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    count = len(read_entries(args.reports_dir))
    print(f"index of {count} report{'s' if count != 1 else ''}: {page}{history}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m monitoring.index``: the same as ``emotitrack monitor-index``."""
    try:
        settings = MonitoringSettings()
    except ValidationError as exc:
        return report_invalid_settings(exc, from_environment=True)
    parser = argparse.ArgumentParser(
        prog="python -m monitoring.index",
        description=DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_index_arguments(parser, settings)
    args = parser.parse_args(argv)
    configure_logging()
    return run_index_command(args, settings)


if __name__ == "__main__":
    sys.exit(main())
