"""Argument helpers shared by the foundation commands (torch-free)."""

from __future__ import annotations

from ddgsim.errors import UserError


def parse_shape(text: str, option: str = "--input-shape") -> tuple[int, ...]:
    """``"3,32,32"`` -> ``(3, 32, 32)``; anything else is a UserError naming the option."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise UserError(f"{option} must be positive integers separated by commas (e.g. 3,32,32), got '{text}'")
    return shape


def require_positive(option: str, value: int) -> None:
    """UserError unless ``value`` > 0."""
    if value <= 0:
        raise UserError(f"{option} must be > 0, got {value}")


def note_provenance(profile: object, where: str, scenario: object = None, micro_batches: int = 1) -> None:
    """Print on stderr, in one line each, whose machine ``profile`` describes when it is not this one,
    and that micro-batch costs are scaled from the batch when the profile has none for ``micro_batches``."""
    import sys

    from ddgsim.profile.format import Profile
    from ddgsim.profile.machine import provenance_note

    note = provenance_note(profile, where, scenario)
    if note:
        sys.stderr.write(note + "\n")
    if isinstance(profile, Profile) and micro_batches > 1 and profile.micro_costs(micro_batches) is None:
        sys.stderr.write(f"note: the profile has no measured costs for {micro_batches} micro-batches; each costs "
                         f"1/{micro_batches} of the batch here (measure them: ddgsim profile {profile.model} "
                         f"--batch-size {profile.batch_size} --micro-batches {micro_batches})\n")


def parse_ints(text: str, option: str) -> list[int]:
    """``"1,2"`` -> ``[1, 2]`` (sorted, distinct, each >= 1); anything else is a UserError naming the option."""
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        vals = []
    if not vals or any(v < 1 for v in vals):
        raise UserError(f"{option} must be positive integers separated by commas, got '{text}'")
    return sorted(set(vals))
