"""What ``simulate`` writes: the trace, and the prediction as tables (rich) or one JSON object."""

from __future__ import annotations

import json as _json
import sys

from rich.table import Table

from ddgsim.commands._table import Column, console, print_tables, replica_cell
from ddgsim.plan.simulate import NamedSimulation
from ddgsim.plan.split import stage_ranges
from ddgsim.predict.event_sim import SimResult
from ddgsim.profile.format import Profile


def write(named: NamedSimulation, result: SimResult, *, trace: str | None, json: bool) -> None:
    """The notes on the inputs (stderr), the trace, then the tables or the JSON object (the trace's
    ``wrote`` line on stderr when stdout carries JSON)."""
    from ddgsim.commands._args import note_provenance

    profile = named.request.profile
    note_provenance(profile, named.profile_file, named.request.scenario, named.request.micro_batches)
    if trace:
        from ddgsim.trace import write_trace

        write_trace(trace, result.timeline, process=f"predicted {result.schedule} on {result.scenario}",
                    rows=list(result.devices), metadata=result.summary())
        print(f"wrote {trace} (open in https://ui.perfetto.dev)", file=sys.stderr if json else sys.stdout)
    if json:
        out = {"model": profile.model, "profile": named.profile_file, "scenario_assumed": named.assumed,
               **result.summary()}
        _json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print_tables_of(result, profile, named.assumed)


def print_tables_of(r: SimResult, profile: Profile, assumed: bool) -> None:
    con = console()
    note = " (assumed: no --scenario given)" if assumed else ""
    con.print(f"[bold]{profile.model}[/] batch {r.batch_size}, schedule [bold]{r.schedule}[/]"
              f"{f' M={r.micro_batches}' if r.micro_batches > 1 else ''}, scenario [bold]{r.scenario}[/]{note}, "
              f"split {','.join(map(str, r.split)) or '(one stage)'}, {r.iterations} iterations simulated")
    con.print(f"iteration {r.iteration_ms:.3f} ms  |  {r.samples_per_s:.1f} samples/s  |  "
              f"speedup vs 1 device {r.speedup_vs_1_device:.3f}x ({r.single_device_ms:.3f} ms)  |  "
              f"vs bp {r.speedup_vs_bp:.3f}x ({r.bp_iteration_ms:.3f} ms)")
    rows: list[list[str] | None] = []
    for k, (start, end) in enumerate(stage_ranges(r.split, profile.num_units)):
        a, b = profile.units[start].name, profile.units[end - 1].name
        rows.append([str(k), replica_cell(r.layout[k] if r.layout else (r.devices[k],)), f"[{start},{end})",
                     a if start == end - 1 else f"{a}…{b}",
                     f"{r.busy_ms[k]:.1f}", f"{max(0.0, r.bubble_fraction[k]):.0%}", str(r.staleness[k]),
                     f"{r.memory[k].total / 2**30:.3f}", "yes" if r.memory_fits[k] else "[red]no[/]"])
    cols = [Column("stage"), Column("device", "left"), Column("units", "left"), Column("layers", "left"),
            Column("busy ms"), Column("bubble"), Column("τ"), Column("peak GiB"), Column("fits")]
    print_tables(con, "stages (τ = staleness)", cols, rows)
    for note in getattr(r, "notes", ()):
        con.print(f"[yellow]note[/]: {note.removeprefix('note: ')}")
    if r.links:
        lt = Table(title="links (per iteration)")
        for col in ("link", "MB", "busy ms", "busy"):
            lt.add_column(col, justify="left" if col == "link" else "right")
        for link in r.links:
            lt.add_row(f"{link.src}->{link.dst}", f"{link.bytes_per_iteration / 1e6:.3f}",
                       f"{link.busy_ms:.3f}", f"{link.busy_ms / r.iteration_ms:.1%}" if r.iteration_ms else "-")
        con.print(lt)
