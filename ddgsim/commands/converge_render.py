"""What ``converge`` prints: the steps each K took to the target loss, as a plain table."""

from __future__ import annotations

from ddgsim.converge.usecase import ConvergeOutcome, Pilots


def render(outcome: ConvergeOutcome) -> str:
    r, p = outcome.request, outcome.request.pilots
    lines = [f"{outcome.model} on --data {p.data}: steps until the training loss (mean of {p.window} steps) "
             f"reaches {outcome.target:.4g}",
             f"{p.seeds} seed(s), {p.steps} steps, batch {r.batch_size}, base lr {p.lr:g}" + compensation_label(p),
             f"{'K':>2}  {'split':<14} {'lr':>8}  {'steps (median, min-max)':>24}  {'vs BP':>6}  {'final loss':>10}"]
    for row in outcome.rows:
        med = row["median_steps"]
        reached = sum(s is not None for s in row["steps_to_target"])
        steps = (f"{med:.0f} ({row['min_steps']}-{row['max_steps']})" if med is not None
                 else f"not reached ({reached}/{len(row['steps_to_target'])} seeds)")
        ratio = f"{row['ratio_to_bp']:.2f}×" if row["ratio_to_bp"] is not None else "-"
        lines.append(f"{row['stages']:>2}  {row['split']!s:<14} {row['lr']:>8.4g}  {steps:>24}  {ratio:>6}  "
                     f"{row['final_loss']:>10.4f}")
    lines.append("learning rates tried on seed 0 (steps to target): " + "; ".join(
        f"K={row['stages']}: " + ", ".join(f"{lr} → {s if s is not None else '-'}" for lr, s in row["lr_tried"].items())
        for row in outcome.rows))
    return "\n".join(lines)


def compensation_label(pilots: Pilots) -> str:
    """``, compensation: warm-up 50, delay-scaled lr, weight prediction`` (empty without)."""
    parts = ([f"warm-up {pilots.warmup_steps}"] if pilots.warmup_steps else []) + \
        (["delay-scaled lr"] if pilots.lr_delay_scale else []) + (["weight prediction"] if pilots.weight_prediction else [])
    return f", compensation: {', '.join(parts)}" if parts else ""
