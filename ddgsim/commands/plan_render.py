"""Tables that ``plan`` prints (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ddgsim.plan.build import KResult, Option, choose
from ddgsim.plan.split import stage_ranges
from ddgsim.predict.scenario import Scenario, bundled_names
from ddgsim.profile.format import Profile
from ddgsim.theory.bounds import stage_step_limits

GIB = 2**30
LABELS = {"planned": "planned", "even": "even (authors')", "parameters": "param-balanced"}
MIN_WIDTH = 132


def _option_rows(profile: Profile, opt: Option, best_ms: float | None, label: str) -> list[list[str]]:
    """One row per stage; the option's totals on its first row."""
    s = opt.sim
    gap = "" if best_ms is None or label == "planned" else f"{100 * (opt.iteration_ms / best_ms - 1):+.1f}%"
    name = LABELS[label] if opt.fits else f"[red]{LABELS[label]} (no fit)[/]"
    rows = []
    for k, (a, b) in enumerate(stage_ranges(opt.split, profile.num_units)):
        layers = profile.units[a].name if b - a == 1 else f"{profile.units[a].name}…{profile.units[b - 1].name}"
        first = k == 0
        rows.append([
            name if first else "", str(k), f"[{a},{b})", layers, str(s.staleness[k]),
            f"{s.peak_memory_bytes[k] / GIB:.2f}", f"{max(0.0, s.bubble_fraction[k]):.0%}",
            f"{opt.iteration_ms:.1f}" if first else "", f"{s.samples_per_s:.1f}" if first else "",
            f"{s.speedup_vs_1_device:.2f}x" if first else "", gap if first else "",
        ])
    return rows


def _k_table(profile: Profile, r: KResult, chosen: bool) -> Table:
    mark = "  [bold green]★ chosen[/]" if chosen else ""
    exact = "" if r.exact else "  [yellow](heuristic search)[/]"
    t = Table(title=f"K = {r.stages}{mark}{exact}", title_justify="left")
    for col in ("option", "stage", "units", "layers", "τ", "peak GiB", "bubble",
                "iter ms", "samples/s", "speedup", "gap"):
        t.add_column(col, justify="left" if col in ("option", "units", "layers") else "right", no_wrap=True)
    best = r.planned.iteration_ms if r.planned else None
    if r.planned is not None:
        for row in _option_rows(profile, r.planned, None, "planned"):
            t.add_row(*row, style="bold" if chosen else None)
    elif r.overflow is not None:
        o = r.overflow
        t.add_row("[red]nothing fits[/]", str(o.stage), "", f"needs {o.need_bytes / GIB:.2f} GiB, "
                  f"{o.over_bytes / GIB:.2f} over", "", "", "", "", "", "", "")
    for b in r.baselines:
        t.add_section()
        for row in _option_rows(profile, b, best, b.label):
            t.add_row(*row)
    return t


def _stage_table(profile: Profile, opt: Option) -> Table:
    s = opt.sim
    limits = stage_step_limits(len(opt.split) + 1, 1.0)
    t = Table(title="chosen plan, per stage", title_justify="left")
    for col in ("stage", "device", "units", "layers", "busy ms", "bubble", "τ",
                "γL <", "peak GiB", "weights*", "activations", "stashed"):
        t.add_column(col, justify="left" if col in ("device", "units", "layers") else "right", no_wrap=True)
    for k, (a, b) in enumerate(stage_ranges(opt.split, profile.num_units)):
        m = s.memory[k]
        t.add_row(str(k), opt.devices[k], f"[{a},{b})", f"{profile.units[a].name}…{profile.units[b - 1].name}",
                  f"{s.busy_ms[k]:.1f}", f"{max(0.0, s.bubble_fraction[k]):.0%}", str(s.staleness[k]),
                  f"{limits[k]:.3f}", f"{m.total / GIB:.3f}", f"{(m.params + m.grads + m.optimizer) / GIB:.3f}",
                  f"{m.activations / GIB:.3f}", f"{m.stashed_weights / GIB:.3f}")
    return t


def render(
    *, profile: Profile, profile_note: str, scenario: Scenario, assumed: bool,
    per_schedule: dict[str, list[KResult]], primary: str, chosen: KResult,
    out: str | None, trace: str | None,
) -> None:
    console = Console()
    if console.width < MIN_WIDTH and not console.is_terminal:
        console = Console(width=MIN_WIDTH)
    console.print(f"[bold]ddgsim plan[/]: {profile.model}, batch {profile.batch_size}, "
                  f"{profile.num_units} units, objective throughput")
    console.print(f"  profile   {profile_note}  [dim](change: --profile FILE, --batch-size B)[/]")
    how = (f"assumed: {len(scenario.devices)} copies of the profiled device, free links"
           if assumed else scenario.description or "given")
    console.print(f"  scenario  {scenario.name} ({how})  [dim](change: --scenario NAME|FILE; "
                  f"bundled: {', '.join(bundled_names())}, ideal-N)[/]")
    if len(per_schedule) > 1:
        t = Table(title="best split of each schedule", title_justify="left")
        for col in ("schedule", "K", "split", "iter ms", "samples/s", "speedup", "staleness", "peak GiB"):
            t.add_column(col, justify="left" if col in ("schedule", "split") else "right")
        for name, rs in per_schedule.items():
            c = choose(rs)
            if c is None or c.planned is None:
                t.add_row(name, "", "[red]nothing fits[/]", "", "", "", "", "")
                continue
            s = c.planned.sim
            t.add_row(name + (" ★" if name == primary else ""), str(c.stages), ",".join(map(str, c.planned.split)) or "-",
                      f"{s.iteration_ms:.1f}", f"{s.samples_per_s:.1f}", f"{s.speedup_vs_1_device:.2f}x",
                      ",".join(map(str, s.staleness)), ",".join(f"{m / GIB:.2f}" for m in s.peak_memory_bytes))
        console.print(t)
    console.print(f"schedule [bold]{primary}[/]; gap = predicted slowdown of a baseline vs the planned split")
    for r in per_schedule[primary]:
        console.print(_k_table(profile, r, r is chosen))
        for note in r.notes:
            console.print(f"  [yellow]note[/]: {note}")
    assert chosen.planned is not None
    opt = chosen.planned
    console.print(_stage_table(profile, opt))
    drift = 100 * (opt.sim.iteration_ms / opt.analytic_ms - 1) if opt.analytic_ms else 0.0
    console.print(
        f"[bold green]chosen[/]: K = {chosen.stages}, split {','.join(map(str, opt.split)) or '(one stage)'} on "
        f"{', '.join(opt.devices)}: {opt.iteration_ms:.1f} ms/iteration, {opt.sim.samples_per_s:.1f} samples/s, "
        f"{opt.sim.speedup_vs_1_device:.2f}x vs 1 device (SimPy {opt.sim.iteration_ms:.3f} ms vs search "
        f"{opt.analytic_ms:.3f} ms, {drift:+.3f}%)"
    )
    console.print("weights* = parameters + gradients + optimizer state; stashed = older weight versions kept for "
                  "delayed backwards; τ = staleness.")
    console.print("γL <: a stage with staleness τ is stable on a quadratic of curvature L only if "
                  "γ·L < 2cos(τπ/(2τ+1)) (Levin–May); see `python -m ddgsim stepsize`.")
    if out:
        console.print(f"wrote {out}; run it: [bold]python -m ddgsim execute {out} --steps 100[/]")
    if trace:
        console.print(f"wrote {trace} (open in https://ui.perfetto.dev)")

