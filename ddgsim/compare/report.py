"""The validation report: its figures (predicted vs measured, errors, speedups, the runs, timelines),
the HTML page and the PNGs."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ddgsim.compare.accuracy import Summary, speedups
from ddgsim.compare.rows import OK, Row, cell, run_label


def scatter_figure(rows: Sequence[Row], title: str = "Predicted vs measured iteration time") -> Any:
    """Measured (``ok``) rows only."""
    import plotly.graph_objects as go

    rows = [r for r in rows if r.ok]
    fig = go.Figure()
    times = [r.predicted_ms for r in rows] + [r.measured_ms for r in rows]
    lo, hi = (min(times) * 0.9, max(times) * 1.1) if times else (0.0, 1.0)
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x",
                             line={"color": "#888", "dash": "dash"}))
    for band, style in ((5, {"color": "#999", "width": 1}), (10, {"color": "#bbb", "width": 1, "dash": "dot"})):
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo / (1 + band / 100), hi / (1 + band / 100)], mode="lines",
                                 line=style, name=f"±{band}%", legendgroup=f"b{band}"))
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo / (1 - band / 100), hi / (1 - band / 100)], mode="lines",
                                 line=style, showlegend=False, legendgroup=f"b{band}"))
    symbols = ["circle", "square", "diamond", "triangle-up", "x", "star"]

    def group(r: Row) -> tuple[int, int, str, int, str]:
        return r.K, r.replicas, r.schedule, r.micro_batches, r.runtime

    for i, (_key, grp) in enumerate(itertools.groupby(sorted(rows, key=group), key=group)):
        g = list(grp)
        fig.add_trace(go.Scatter(
            x=[r.measured_ms for r in g], y=[r.predicted_ms for r in g], mode="markers",
            marker={"size": 11, "symbol": symbols[i % len(symbols)]}, name=run_label(g[0]).rsplit(" [", 1)[0],
            text=[f"split [{r.split or '-'}] {r.label}<br>error {r.error_pct:+.1f}%" for r in g],
            hovertemplate="%{text}<br>measured %{x:.1f} ms<br>predicted %{y:.1f} ms<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="measured ms / iteration", yaxis_title="predicted ms / iteration",
                      height=560, width=720)
    if lo > 0 and hi / lo > 20:  # times spanning orders of magnitude (a small model beside ResNets)
        fig.update_xaxes(type="log", range=[math.log10(lo), math.log10(hi)], constrain="domain")
        fig.update_yaxes(type="log", range=[math.log10(lo), math.log10(hi)], constrain="domain")
    else:
        fig.update_xaxes(range=[lo, hi], constrain="domain")
        fig.update_yaxes(range=[lo, hi], constrain="domain")
    return fig


def error_figure(rows: Sequence[Row], title: str = "Prediction error per run") -> Any:
    """Measured (``ok``) rows only."""
    import plotly.graph_objects as go

    rows = [r for r in rows if r.ok]
    several = len({(r.model, r.batch_size) for r in rows}) > 1
    labels = [(f"{r.model} b{r.batch_size} " if several else "") + f"{run_label(r)} {r.label}" for r in rows]
    seen: dict[str, int] = {}
    for i, text in enumerate(labels):  # one bar per run, even where two runs read alike
        seen[text] = seen.get(text, 0) + 1
        if seen[text] > 1:
            labels[i] = f"{text} #{seen[text]}"
    fig = go.Figure(go.Bar(y=labels, x=[r.error_pct for r in rows], orientation="h",
                           error_x={"type": "data", "array": [0.0 if math.isnan(r.noise_pct) else r.noise_pct
                                                              for r in rows], "color": "#555", "thickness": 1},
                           marker_color=["#E45756" if abs(r.error_pct) > 10 else "#F58518" if abs(r.error_pct) > 5
                                         else "#54A24B" for r in rows],
                           hovertemplate="%{y}<br>%{x:+.1f}%<extra></extra>", name="error"))
    if any(not math.isnan(r.session_error_pct) for r in rows):  # the same runs at the session's speed
        fig.add_trace(go.Scatter(y=labels, x=[r.session_error_pct for r in rows], mode="markers",
                                 marker={"symbol": "diamond", "size": 9, "color": "#4C78A8"},
                                 name="at the machine's speed over the session",
                                 hovertemplate="%{y}<br>at the session's speed %{x:+.1f}%<extra></extra>"))
        fig.update_layout(legend={"orientation": "h", "y": -0.15})
    for x in (-10, -5, 5, 10):
        fig.add_vline(x=x, line={"color": "#bbb", "dash": "dot"})
    fig.update_layout(title=title, xaxis_title="(predicted − measured) / measured, %  (median of the repeats; "
                                               "bars: the run's noise, half the spread of its repeats)",
                      height=140 + 20 * len(rows), margin={"l": 20}, yaxis={"autorange": "reversed"})
    return fig


def speedup_figure(rows: Sequence[Row],
                   title: str = "Speedup over K = 1, predicted vs measured (against K = 1 of the same moment)") -> Any:
    """Every run of K ≥ 2 with a one-process run to pair each of its executions with
    (:func:`speedups`): the measured speedup (median over its executions, range as error bars)
    against the predicted one."""
    import plotly.graph_objects as go

    ups = speedups(rows)
    fig = go.Figure()
    if ups:
        vals = [v for u in ups.values() for v in (u.predicted, u.measured)]
        lo, hi = min(vals) * 0.9, max(vals) * 1.1
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x",
                                 line={"color": "#888", "dash": "dash"}))
        idx = sorted(ups)
        lows = [ups[i].measured - min(ups[i].rounds) for i in idx]
        highs = [max(ups[i].rounds) - ups[i].measured for i in idx]
        fig.add_trace(go.Scatter(
            x=[ups[i].measured for i in idx], y=[ups[i].predicted for i in idx], mode="markers",
            marker={"size": 10}, name="runs",
            error_x={"type": "data", "array": highs, "arrayminus": lows, "color": "#999"},
            text=[f"{run_label(rows[i])} {rows[i].label}<br>error {ups[i].error_pct:+.1f}%" for i in idx],
            hovertemplate="%{text}<br>measured %{x:.2f}x<br>predicted %{y:.2f}x<extra></extra>"))
        fig.update_xaxes(range=[lo, hi], constrain="domain")
        fig.update_yaxes(range=[lo, hi], constrain="domain")
    fig.update_layout(title=title, xaxis_title="measured speedup (median over rounds; bars: range)",
                      yaxis_title="predicted speedup", height=520, width=680)
    return fig


def runs_table(rows: Sequence[Row]) -> Any:
    """Every run, failed ones included (red, with the reason): what the CSV holds."""
    import plotly.graph_objects as go

    head = ["K", "schedule", "split", "label", "predicted ms", "measured ms", "error %", "status"]
    cols = [[r.K for r in rows], [r.schedule for r in rows], [r.split or "-" for r in rows],
            [r.label for r in rows], [cell(r.predicted_ms, ".2f") for r in rows],
            [cell(r.measured_ms, ".2f") or "-" for r in rows], [cell(r.error_pct, "+.1f") or "-" for r in rows],
            [(OK if r.attempts == 1 else f"{OK} (attempt {r.attempts})") if r.ok else f"{r.status}: {r.error}"
             for r in rows]]
    fill = ["#FAD4D4" if not r.ok else "white" for r in rows]
    failed = sum(not r.ok for r in rows)
    fig = go.Figure(go.Table(header={"values": head, "align": "left", "fill_color": "#EEE"},
                             cells={"values": cols, "align": "left", "fill_color": [fill] * len(head)},
                             columnwidth=[1, 3, 2, 3, 2, 2, 2, 6]))
    fig.update_layout(title=f"All runs ({failed} failed)" if failed else "All runs",
                      height=160 + 28 * len(rows), margin={"t": 60, "b": 10})
    return fig


def timeline_figure(sim_trace: Path, measured_trace: Path, title: str, sim_iterations: int) -> Any:
    """Two steady-state iterations, predicted and measured, side by side on one time scale
    (the measured ones from the middle of the run its trace holds)."""
    from ddgsim.compare.figures import batch_of, events_from_trace, gantt_pair, steady_window
    from ddgsim.trace import load_trace

    pred, span_p = steady_window(events_from_trace(load_trace(sim_trace)), sim_iterations // 2)
    events = events_from_trace(load_trace(measured_trace))
    steps = len({batch_of(e.name) for e in events if e.cat == "F"} - {None})
    meas, span_m = steady_window(events, max(0, steps // 2 - 1))
    return gantt_pair(pred, meas, title, span_ms=max(span_p, span_m) or None)


def write_report(path: Path, rows: Sequence[Row], summary: Summary, timelines: Sequence[Any],
                 header: Sequence[str] = ()) -> Path:
    from ddgsim.compare.figures import write_html

    title = f"ddgsim validation: {rows[0].model}, batch {rows[0].batch_size}" if rows else "ddgsim validation"
    measured = [scatter_figure(rows), error_figure(rows)] if any(r.ok for r in rows) else []
    if speedups(rows):
        measured.append(speedup_figure(rows))
    figs = [*measured, runs_table(rows), *timelines]
    return write_html(path, figs, title, intro="\n".join([*header, *summary.lines()]))


def export_figures(folder: Path, rows: Sequence[Row], summary: Summary, timelines: Sequence[Any]) -> list[Path]:
    """PNGs for a README: the scatter, the errors, every timeline (where Chromium is present)."""
    from ddgsim.compare.figures import export_pngs

    model = f"{rows[0].model}, batch {rows[0].batch_size}" if rows else ""
    head = (f"median |error| {summary.median_abs_error_pct:.1f}%, worst {summary.worst_abs_error_pct:.1f}%, "
            f"Kendall τ {summary.kendall_tau:.2f}")
    figs = [("validation-scatter.png", scatter_figure(rows, f"Predicted vs measured ({model})<br><sup>{head}</sup>")),
            ("validation-errors.png", error_figure(rows, f"Prediction error per run ({model})"))]
    if speedups(rows):
        figs.append(("validation-speedups.png", speedup_figure(rows, f"Speedup over K = 1 ({model})")))
    figs += [(f"validation-timeline-{i + 1}.png", fig) for i, fig in enumerate(timelines)]
    items = [(fig, folder / name) for name, fig in figs]
    return [p for _, p in items] if export_pngs(items, width=1100) == len(items) else []
