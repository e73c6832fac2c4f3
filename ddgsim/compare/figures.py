"""Plotly figures shared by ``validate`` and the analysis notebooks: timelines, HTML pages, PNG export.

Timelines are read back from Chrome trace files (``ddgsim.trace``), so a
simulated and a measured run are drawn by the same code. PNG export goes through
kaleido, which needs a Chromium/Chrome binary; without one it is skipped with a
message (HTML needs nothing).
"""

from __future__ import annotations

import html
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ddgsim.trace import TraceEvent

log = logging.getLogger(__name__)

COLORS = {"F": "#4C78A8", "B": "#F58518", "U": "#54A24B", "W": "#BAB0AC", "link": "#B279A2"}
"""Colour per event category (forward, backward, update, wait, transfer)."""
NAMES = {"F": "forward", "B": "backward", "U": "update", "W": "wait", "link": "transfer"}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def events_from_trace(data: dict[str, Any]) -> list[TraceEvent]:
    """The ``X`` events of a Chrome trace as :class:`TraceEvent` (rows named by ``thread_name``)."""
    names: dict[tuple[int, int], str] = {}
    for e in data.get("traceEvents", []):
        if e.get("ph") == "M" and e.get("name") == "thread_name":
            names[(e.get("pid", 0), e.get("tid", 0))] = e["args"]["name"]
    out = []
    for e in data.get("traceEvents", []):
        if e.get("ph") != "X":
            continue
        row = names.get((e.get("pid", 0), e.get("tid", 0)), str(e.get("tid", 0)))
        start = float(e["ts"]) / 1e3
        out.append(TraceEvent(row=row, name=str(e.get("name", "")), start_ms=start,
                              end_ms=start + float(e.get("dur", 0.0)) / 1e3, cat=str(e.get("cat", "")),
                              args=dict(e.get("args", {}))))
    return out


def batch_of(name: str) -> int | None:
    """Batch index of a compute event name ``0F3`` / ``1B2.1`` (None for other names)."""
    from ddgsim.schedule import Action

    try:
        return Action.from_str(name).batch
    except (ValueError, IndexError, KeyError):
        return None


def steady_window(events: Sequence[TraceEvent], first: int, count: int = 2) -> tuple[list[TraceEvent], float]:
    """Events overlapping iterations ``first .. first+count-1``, shifted so that window starts at 0.

    The window opens at the earliest forward of batch ``first`` and closes at the
    earliest forward of batch ``first + count`` (or the trace's end). Returns
    ``(events, window length in ms)``.
    """
    fwd: dict[int, float] = {}
    for e in events:
        if e.cat == "F":
            b = batch_of(e.name)
            if b is not None:
                fwd[b] = min(fwd.get(b, e.start_ms), e.start_ms)
    if not events:
        return [], 0.0
    lo = fwd.get(first, min(e.start_ms for e in events))
    hi = fwd.get(first + count, max(e.end_ms for e in events))
    out = [TraceEvent(row=e.row, name=e.name, start_ms=max(e.start_ms, lo) - lo, end_ms=min(e.end_ms, hi) - lo,
                      cat=e.cat, args=e.args)
           for e in events if e.end_ms > lo and e.start_ms < hi]
    return out, hi - lo


def _rows(events: Iterable[TraceEvent]) -> list[str]:
    rows = list(dict.fromkeys(e.row for e in events))
    return sorted(rows, key=lambda r: ("->" in r, rows.index(r)))


def add_gantt(fig: go.Figure, events: Sequence[TraceEvent], *, row: int = 1, col: int = 1,
              show_legend: bool = True) -> None:
    """Horizontal bars, one row per device/link, coloured by category (F, B, U, W, link)."""
    by_cat: dict[str, list[TraceEvent]] = {}
    for e in events:
        by_cat.setdefault(e.cat if e.cat in COLORS else "link" if "->" in e.row else e.cat, []).append(e)
    for cat in [c for c in COLORS if c in by_cat] + [c for c in by_cat if c not in COLORS]:
        evs = by_cat[cat]
        fig.add_trace(go.Bar(
            orientation="h", y=[e.row for e in evs], x=[e.end_ms - e.start_ms for e in evs],
            base=[e.start_ms for e in evs], name=NAMES.get(cat, cat), legendgroup=cat,
            marker_color=COLORS.get(cat, "#999999"), showlegend=show_legend,
            text=[e.name for e in evs], textposition="inside", insidetextanchor="middle",
            hovertemplate="%{text}<br>%{base:.2f} ms + %{x:.2f} ms<extra></extra>",
        ), row=row, col=col)
    rows = _rows(events)
    fig.update_yaxes(categoryorder="array", categoryarray=list(reversed(rows)), row=row, col=col)
    fig.update_xaxes(title_text="time (ms)", row=row, col=col)


def gantt(events: Sequence[TraceEvent], title: str) -> go.Figure:
    fig = make_subplots(rows=1, cols=1)
    add_gantt(fig, events)
    fig.update_layout(title=title, barmode="overlay", height=160 + 40 * len(_rows(events)))
    return fig


def gantt_pair(predicted: Sequence[TraceEvent], measured: Sequence[TraceEvent], title: str,
               span_ms: float | None = None) -> go.Figure:
    """Predicted and measured timelines side by side on the same time scale."""
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=("predicted (simulator)", "measured (executor)"))
    add_gantt(fig, predicted, row=1, col=1)
    add_gantt(fig, measured, row=1, col=2, show_legend=False)
    rows = _rows([*predicted, *measured])
    fig.update_yaxes(categoryorder="array", categoryarray=list(reversed(rows)))
    if span_ms:
        fig.update_xaxes(range=[0, span_ms])
    fig.update_layout(title=title, barmode="overlay", height=180 + 40 * len(rows))
    return fig


def write_html(path: str | os.PathLike[str], figures: Sequence[go.Figure], title: str, intro: str = "") -> Path:
    """One self-contained page: plotly.js embedded once, then every figure; ``intro`` is preformatted text."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
             f"<body style='font-family:sans-serif'><h1>{html.escape(title)}</h1>"]
    if intro:
        parts.append(f"<pre>{html.escape(intro)}</pre>")
    for i, fig in enumerate(figures):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    parts.append("</body></html>")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts))
    return out


def chromium() -> str | None:
    """Path of a Chromium/Chrome binary kaleido can drive, or None."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def export_png(fig: go.Figure, path: str | os.PathLike[str], *, width: int = 1000, height: int | None = None,
               scale: float = 1.0) -> bool:
    """Static PNG through kaleido; False (with a logged warning) where Chromium or kaleido is absent."""
    return export_pngs([(fig, path)], width=width, height=height, scale=scale) == 1


def export_pngs(items: Sequence[tuple[go.Figure, str | os.PathLike[str]]], *, width: int = 1000,
                height: int | None = None, scale: float = 1.0) -> int:
    """Several PNGs with one Chromium start (``plotly.io.write_images``); returns how many were written."""
    if not items:
        return 0
    where = ", ".join(str(p) for _, p in items)
    browser = chromium()
    if browser is None:
        log.warning("PNG export skipped (%s): no Chromium/Chrome found (Debian: apt-get install chromium)", where)
        return 0
    try:
        import kaleido  # noqa: F401
        import plotly.io as pio
    except ImportError:
        log.warning("PNG export skipped (%s): kaleido is not installed (pip install kaleido)", where)
        return 0
    os.environ.setdefault("BROWSER_PATH", browser)
    for name in ("choreographer", "kaleido", "logistro"):  # their debug tracebacks are noise here
        logging.getLogger(name).setLevel(logging.CRITICAL)
    for _, p in items:
        Path(p).parent.mkdir(parents=True, exist_ok=True)
    figs = [f for f, _ in items]
    try:
        pio.write_images(figs, [str(p) for _, p in items], width=[width] * len(figs),
                         height=[height or int(f.layout.height or 500) for f in figs], scale=[scale] * len(figs))
    except Exception as exc:  # kaleido/Chromium failures are many and unrelated to our data
        log.warning("PNG export failed (%s): %s: %s", where, type(exc).__name__, str(exc)[:200])
        return 0
    return len(items)


def loss_vs_time(curves: Sequence[dict[str, Any]], target: float, title: str) -> go.Figure:
    """Training loss against wall time, one colour per K: measured (solid: the executor's smoothed
    losses at its iteration end times) and predicted (dashed: the pilots' smoothed losses at
    step × predicted iteration time); the target as a horizontal line. Each curve:
    ``{"K", "measured_s", "measured_loss", "predicted_s", "predicted_loss"}``."""
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    fig = go.Figure()
    for i, c in enumerate(curves):
        color = palette[i % len(palette)]
        fig.add_trace(go.Scatter(x=c["measured_s"], y=c["measured_loss"], mode="lines", name=f"K={c['K']} measured",
                                 line={"color": color}))
        fig.add_trace(go.Scatter(x=c["predicted_s"], y=c["predicted_loss"], mode="lines",
                                 name=f"K={c['K']} predicted", line={"color": color, "dash": "dash"}))
    fig.add_hline(y=target, line={"color": "grey", "dash": "dot"}, annotation_text=f"target {target:.4g}")
    fig.update_layout(title=title, xaxis_title="wall time (s)", yaxis_title="training loss (smoothed)",
                      yaxis_type="log", template="plotly_white")
    return fig
