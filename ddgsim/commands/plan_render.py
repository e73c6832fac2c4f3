"""What ``plan`` writes: its notes, the plan file and trace, and its tables (rich) or JSON."""

from __future__ import annotations

import json as _json
import sys
from typing import Any

from ddgsim.commands._table import (
    SECTION,
    Column,
    console,
    print_tables,
    replica_cell,
    replica_label,
)
from ddgsim.plan.build import KResult, Option, choose
from ddgsim.plan.split import stage_ranges
from ddgsim.planner import NamedPlan, PlanOutcome
from ddgsim.predict.scenario import Scenario, bundled_names
from ddgsim.profile.format import Profile
from ddgsim.theory.bounds import stage_step_limits

GIB = 2**30
LABELS = {"planned": "planned", "even": "even", "parameters": "params"}


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


K_COLUMNS = [Column("option", "left"), Column("stage"), Column("units", "left"), Column("layers", "left"),
             Column("τ"), Column("peak GiB"), Column("bubble"), Column("iter ms", part=1), Column("samples/s", part=1),
             Column("speedup", part=1), Column("gap", part=1)]
STAGE_COLUMNS = [Column("stage"), Column("device", "left"), Column("units", "left"), Column("layers", "left"),
                 Column("busy ms"), Column("bubble"), Column("τ"), Column("γL <"), Column("peak GiB", part=1),
                 Column("weights*", part=1), Column("activations", part=1), Column("stashed", part=1)]


def _k_rows(profile: Profile, r: KResult, chosen: bool) -> list[list[str] | None]:
    best = r.planned.iteration_ms if r.planned else None
    rows: list[list[str] | None] = []
    if r.planned is not None:
        rows += [[f"[bold]{c}[/]" if chosen and c else c for c in row]
                 for row in _option_rows(profile, r.planned, None, "planned")]
    elif r.overflow is not None:
        o = r.overflow
        rows.append(["[red]nothing fits[/]", str(o.stage), "", f"needs {o.need_bytes / GIB:.2f} GiB, "
                     f"{o.over_bytes / GIB:.2f} over", "", "", "", "", "", "", ""])
    for b in r.baselines:
        rows.append(SECTION)
        rows += _option_rows(profile, b, best, b.label)
    return rows


def _replicas(opt: Option | None) -> tuple[int, ...]:
    return (1,) if opt is None or opt.layout is None else opt.layout.replicas


def _k_title(r: KResult, chosen: bool) -> str:
    mark = "  [bold green]★ chosen[/]" if chosen else ""
    exact = "" if r.exact else "  [yellow](heuristic search)[/]"
    return f"K = {r.stages}{replica_label(_replicas(r.planned))}{mark}{exact}"


def _devices(opt: Option, k: int) -> str:
    return replica_cell(opt.layout.devices[k] if opt.layout is not None else (opt.devices[k],))


LAYOUT_COLUMNS = [Column("D"), Column("K"), Column("devices"), Column("mapping", "left"), Column("iter ms"),
                  Column("samples/s"), Column("vs best")]


def _layout_rows(found: Any, batch: int) -> list[list[str] | None]:
    best = found.best.iteration_ms if found.best is not None else None
    rows: list[list[str] | None] = []
    for D, r in found.per_replicas.items():
        star = " ★" if found.best is not None and r is found.best else ""
        exact = r.best is not None and r.best.exact
        rows.append(_layout_row(f"{D}{star}", r, exact, best, batch))
    m = found.mixed
    if m is not None and m.best is not None:
        reps = m.replica_counts
        star = " ★" if m is found.best else ""
        rows.append(_layout_row(f"{min(reps)}–{max(reps)}{star}", m, m.best.exact, best, batch))
    return rows


def _layout_row(D: str, r: Any, exact: bool, best: float | None, batch: int) -> list[str]:
    return [D, str(r.stages), str(r.devices), r.mapping + ("" if exact else " (heuristic)"),
            f"{r.iteration_ms:.1f}", f"{batch * 1e3 / r.iteration_ms:.1f}",
            "" if best is None else f"{100 * (r.iteration_ms / best - 1):+.1f}%"]


def render_layouts(con: Any, found: Any, batch: int, chosen_ms: float | None = None) -> None:
    """The layout search: the best K of each D, the baselines, the bound for any layout (the gap
    measured from ``chosen_ms``, the chosen plan's reported time, when given)."""
    print_tables(con, "best K for each replica count D", LAYOUT_COLUMNS, _layout_rows(found, batch))
    rest = ("every one" if found.searched == found.candidates
            else f"{found.searched} of {found.candidates}, the rest bounded out by a lower bound")
    con.print(f"  K stages × D replicas on K·D devices: {found.candidates} (K, D) candidates, searched exactly: "
              f"{rest}; {found.wall_s:.2f} s")
    bounded = [D for D in found.replica_options if D not in found.replicas_searched]
    if bounded:
        con.print(f"  D = {', '.join(map(str, bounded))}: every K bounded out (none can beat the chosen layout), "
                  "so no row")
    unfit = [D for D in found.replicas_searched if D not in found.per_replicas]
    if unfit:
        con.print(f"  D = {', '.join(map(str, unfit))}: no K searched fits in memory, so no row")
    if found.mixed is not None and found.mixed.best is not None:
        m = found.mixed
        how = ("the exact search's best: every K, split and D_k priced with the closed form's work, messages, "
               "all-reduces and overheads; stages packed in device order" if found.exact_bound else
               "the least-period packing of stages and D_k, each stage at the next offset in device order where "
               "its all-reduce is fastest; its split searched exactly")
        con.print(f"  per-stage D_k: K = {m.stages} stages of {min(m.replica_counts)}–{max(m.replica_counts)} "
                  f"replicas on {m.devices} devices ({how})")
    b = found.best
    if b is None:
        return
    if found.mixed_note:
        con.print(f"  {found.mixed_note}")
    for label, r in (("pure pipeline", found.pipeline), ("pure data parallel", found.data_parallel)):
        if r is None or r is b or (label == "pure data parallel" and r.replicas == 1):
            continue
        con.print(f"  best {label}: K = {r.stages} × D = {r.replicas}, {r.iteration_ms:.1f} ms/iteration; "
                  f"the chosen layout is {100 * (1 - b.iteration_ms / r.iteration_ms):.1f}% faster (predicted)")
    ms = chosen_ms if chosen_ms is not None else b.iteration_ms
    bound = found.any_layout_bound_ms
    if found.exact_bound:
        sim = ("" if abs(ms - b.iteration_ms) <= 1e-3 * b.iteration_ms else
               f"; the simulator rates the chosen one at {ms:.1f} ms ({100 * (ms / b.iteration_ms - 1):+.1f}%: it "
               "overlaps gradient buckets with the backward pass, which the closed form does not)")
        con.print(f"  no layout of any K, per-stage D_k, split or mapping beats {bound:.1f} ms in the closed form "
                  f"(work, messages, all-reduces, overheads; memory aside): the chosen one takes "
                  f"{b.iteration_ms:.1f} ms there, within {100 * max(0.0, b.iteration_ms / bound - 1):.1f}% of it"
                  + sim)
    else:
        con.print(f"  no layout of any K, per-stage D_k, split or mapping beats {bound:.1f} ms "
                  "(each stage's work + update on the fastest device, best packing, free communication): "
                  f"the chosen one ({ms:.1f} ms) is within {100 * (ms / bound - 1):.1f}% of it")
    for note in found.notes:
        con.print(f"  [yellow]note[/]: {note.removeprefix('note: ')}")


def _stage_rows(profile: Profile, opt: Option) -> list[list[str] | None]:
    s = opt.sim
    limits = stage_step_limits(len(opt.split) + 1, 1.0)
    rows: list[list[str] | None] = []
    for k, (a, b) in enumerate(stage_ranges(opt.split, profile.num_units)):
        m = s.memory[k]
        layers = profile.units[a].name if b - a == 1 else f"{profile.units[a].name}…{profile.units[b - 1].name}"
        rows.append([str(k), _devices(opt, k), f"[{a},{b})", layers,
                     f"{s.busy_ms[k]:.1f}", f"{max(0.0, s.bubble_fraction[k]):.0%}", str(s.staleness[k]),
                     f"{limits[k]:.3f}", f"{m.total / GIB:.3f}", f"{(m.params + m.grads + m.optimizer) / GIB:.3f}",
                     f"{m.activations / GIB:.3f}", f"{m.stashed_weights / GIB:.3f}"])
    return rows


def staleness_note(model: str, schedule: str, stages: int) -> str | None:
    """Past what pilots have measured for ``model``: what this plan's staleness costs in training is
    unknown (``None`` when measured, or without staleness)."""
    from ddgsim.converge.objective import staleness_of
    from ddgsim.converge.pilot import measured_stages

    tau = staleness_of(schedule, stages)
    if tau == 0:
        return None
    seen = measured_stages(model)
    if seen is not None and seen >= stages:
        return None
    known = "no pilot has measured any" if seen is None else f"pilots measured up to {seen - 1}"
    return (f"stage 0 trains on gradients {tau} iteration(s) old; for {model} {known}, so what it costs in steps "
            f"to a loss is unknown (measure: ddgsim converge {model} --data D --stages 1,{stages}; or plan with "
            "--objective time-to-loss, or --max-staleness N)")


def render_time_to_loss(con: Any, ttl: dict[str, Any], chosen: int) -> None:
    """The time-to-loss table: per K its best layout's iteration time, the pilots' steps to the
    target and their product; the chosen K starred."""
    rows: list[list[str] | None] = []
    for r in ttl["rows"]:
        steps = (f"{r['median_steps']:.0f} ({r['min_steps']}–{r['max_steps']})" if r["median_steps"] is not None
                 else "not reached")
        t = r["time_to_target_s"]
        rows.append([str(r["stages"]) + (" ★" if r["stages"] == chosen else ""), r["layout"],
                     ",".join(map(str, r["split"])) or "-", f"{r['iteration_ms']:.1f}", f"{r['lr']:.4g}", steps,
                     f"{t:.1f}" if t is not None else "-"])
    cols = [Column("K"), Column("layout", "left"), Column("split", "left"), Column("iter ms"), Column("lr"),
            Column("steps to target"), Column("time s")]
    print_tables(con, f"time to training loss {ttl['target_loss']:.4g} ({ttl['data']}; pilots: {ttl['seeds']} "
                      f"seed(s) × {ttl['pilot_steps']} steps, batch {ttl['pilot_batch']}, loss averaged over "
                      f"{ttl['window']} steps)", cols, rows)
    con.print("  steps: median (min–max) over the seeds, with the learning rate chosen for that K; time = "
              "steps × the layout's predicted iteration time; the plan below is the starred K")


def write(named: NamedPlan, outcome: PlanOutcome, *, out: str | None, trace: str | None, json: bool) -> None:
    """The notes on the inputs (stderr), the trace and the plan file, then the tables, or the plan
    as JSON (``wrote`` lines on stderr: stdout stays pure JSON)."""
    from ddgsim.commands._args import note_provenance
    from ddgsim.schedule import get_schedule

    request = named.request
    micro = (request.micro_batches or 4) if any(get_schedule(s).micro_batched for s in request.schedules) else 1
    note_provenance(request.profile, named.profile_file, outcome.scenario, micro)
    if trace:
        from ddgsim.trace import write_trace

        assert outcome.chosen.planned is not None
        sim = outcome.chosen.planned.sim
        write_trace(trace, sim.timeline, process=f"predicted {outcome.schedule} on {outcome.scenario.name}",
                    rows=list(sim.devices), metadata=sim.summary())
    if out:
        outcome.plan.save(out)
    if not json:
        render(profile=request.profile, profile_note=named.profile_note, scenario=outcome.scenario,
               assumed=outcome.assumed, per_schedule=outcome.per_schedule, primary=outcome.schedule,
               chosen=outcome.chosen, out=out, trace=trace, layouts=outcome.layouts, objective=request.objective,
               time_to_loss=outcome.time_to_loss)
        return
    data = outcome.plan.to_json()
    if len(request.schedules) > 1:
        data["extra"]["schedules"] = outcome.best_per_schedule()
    _json.dump(data, sys.stdout, indent=1)
    sys.stdout.write("\n")
    for written in (out, trace):
        if written:
            print(f"wrote {written}", file=sys.stderr)


def render(
    *, profile: Profile, profile_note: str, scenario: Scenario, assumed: bool,
    per_schedule: dict[str, list[KResult]], primary: str, chosen: KResult,
    out: str | None, trace: str | None, layouts: Any = None,
    objective: str = "throughput", time_to_loss: dict[str, Any] | None = None,
) -> None:
    """The tables: the inputs, each K's split and baselines (or the layout search), the chosen plan."""
    con = console()
    con.print(f"[bold]ddgsim plan[/]: {profile.model}, batch {profile.batch_size}, "
                  f"{profile.num_units} units, objective {objective}")
    con.print(f"  profile   {profile_note}  [dim](change: --profile FILE, --batch-size B)[/]")
    how = (f"assumed: {len(scenario.devices)} copies of the profiled device, free links"
           if assumed else scenario.description or "given")
    con.print(f"  scenario  {scenario.name} ({how})  [dim](change: --scenario NAME|FILE; "
                  f"bundled: {', '.join(bundled_names())}, ideal-N)[/]")
    if time_to_loss:
        render_time_to_loss(con, time_to_loss, chosen.stages)
    if len(per_schedule) > 1:
        rows: list[list[str] | None] = []
        for name, rs in per_schedule.items():
            c = choose(rs)
            if c is None or c.planned is None:
                rows.append([name, "", "[red]nothing fits[/]", "", "", "", "", ""])
                continue
            s = c.planned.sim
            rows.append([name + (" ★" if name == primary else ""), str(c.stages),
                         ",".join(map(str, c.planned.split)) or "-", f"{s.iteration_ms:.1f}", f"{s.samples_per_s:.1f}",
                         f"{s.speedup_vs_1_device:.2f}x", ",".join(map(str, s.staleness)),
                         ",".join(f"{m / GIB:.2f}" for m in s.peak_memory_bytes)])
        cols = [Column("schedule", "left"), Column("K"), Column("split", "left"), Column("iter ms"),
                Column("samples/s"), Column("speedup"), Column("staleness"), Column("peak GiB")]
        print_tables(con, "best split of each schedule", cols, rows)
    if layouts is None:
        con.print(f"schedule [bold]{primary}[/]; baselines: even = the authors' split (equal units per stage), "
                  "params = equal parameters per stage; gap = their predicted slowdown vs the planned split")
    else:
        con.print(f"schedule [bold]{primary}[/]; baselines: the best pure pipeline (D = 1) and pure data "
                  "parallelism (K = 1); --replicas 1 shows every K of a pure pipeline against the authors' split")
    if layouts is not None:
        render_layouts(con, layouts, profile.batch_size,
                       chosen.planned.iteration_ms if chosen.planned is not None else None)
    for r in per_schedule[primary]:
        print_tables(con, _k_title(r, r is chosen), K_COLUMNS, _k_rows(profile, r, r is chosen))
        for note in r.notes:
            con.print(f"  [yellow]note[/]: {note.removeprefix('note: ')}")
    assert chosen.planned is not None
    opt = chosen.planned
    print_tables(con, "chosen plan, per stage", STAGE_COLUMNS, _stage_rows(profile, opt))
    drift = round(100 * (opt.sim.iteration_ms / opt.analytic_ms - 1), 3) + 0.0 if opt.analytic_ms else 0.0  # no -0.000
    reps = _replicas(opt)
    where = (", ".join(opt.devices) if max(reps) == 1
             else f"{len(opt.devices)} devices ({opt.devices[0]}…{opt.devices[-1]})")
    check = (f"SimPy {opt.sim.iteration_ms:.3f} ms vs search {opt.analytic_ms:.3f} ms, {drift:+.3f}%"
             if opt.sim.events else "closed form, not simulated")
    con.print(
        f"[bold green]chosen[/]: K = {chosen.stages}{replica_label(reps)}, split "
        f"{','.join(map(str, opt.split)) or '(one stage)'} on {where}: {opt.iteration_ms:.1f} ms/iteration, "
        f"{opt.sim.samples_per_s:.1f} samples/s, {opt.sim.speedup_vs_1_device:.2f}x vs 1 device ({check})"
    )
    for note in opt.sim.notes:
        con.print(f"  [yellow]note[/]: {note.removeprefix('note: ')}")
    if objective == "throughput":
        stale = staleness_note(profile.model, primary, chosen.stages)
        if stale:
            con.print(f"  [yellow]note[/]: {stale}")
    con.print("weights* = parameters + gradients + optimizer state; stashed = older weight versions kept for "
                  "delayed backwards; τ = staleness.")
    con.print("γL <: a stage with staleness τ is stable on a quadratic of curvature L only if "
                  "γ·L < 2cos(τπ/(2τ+1)) (Levin–May); see `python -m ddgsim stepsize`.")
    if out:
        from ddgsim.models.registry import buildable

        data = "text" if profile.input_dtype == "int64" else "synthetic"
        if buildable(profile.model):
            con.print(f"wrote {out}; run it: [bold]python -m ddgsim execute {out} --steps 100 --data {data}[/]")
        else:
            con.print(f"wrote {out}; its model '{profile.model}' (from the profile) is not one this tool builds "
                      "(`python -m ddgsim models`, or a package.module:factory): run it where that model is")
    if trace:
        con.print(f"wrote {trace} (open in https://ui.perfetto.dev)")

