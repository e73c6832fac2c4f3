"""Argument helpers shared by the foundation commands (torch-free)."""

from __future__ import annotations

from typing import Any

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
    """Print on stderr, one line each (folded to a terminal's width), whose machine ``profile`` describes
    when it is not this one, and that micro-batch costs are scaled from the batch when the profile has
    none for ``micro_batches``."""
    import sys

    from ddgsim.models.registry import profile_hint
    from ddgsim.profile.format import Profile
    from ddgsim.profile.machine import provenance_note

    note = provenance_note(profile, where, scenario)
    if note:
        sys.stderr.write(for_terminal(note, sys.stderr) + "\n")
    if isinstance(profile, Profile) and micro_batches > 1 and profile.micro_costs(micro_batches) is None:
        how = profile_hint(profile.model, f"--batch-size {profile.batch_size} --micro-batches {micro_batches}")
        sys.stderr.write(for_terminal(f"note: the profile has no measured costs for {micro_batches} micro-batches; "
                                      f"each costs 1/{micro_batches} of the batch here (measure them: {how})",
                                      sys.stderr) + "\n")


def for_terminal(line: str, stream: Any) -> str:
    """``line`` folded to the terminal's width (continuations indented) when ``stream`` is a terminal;
    unchanged otherwise (a log or a pipe keeps one line per note, for grep)."""
    import shutil
    import textwrap

    if not (hasattr(stream, "isatty") and stream.isatty()):
        return line
    width = shutil.get_terminal_size((100, 24)).columns
    return "\n".join(textwrap.wrap(line, width=max(40, width - 1), subsequent_indent="  ", break_on_hyphens=False,
                                    break_long_words=False))


def parse_ints(text: str, option: str) -> list[int]:
    """``"1,2"`` -> ``[1, 2]`` (sorted, distinct, each >= 1); anything else is a UserError naming the option."""
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        vals = []
    if not vals or any(v < 1 for v in vals):
        raise UserError(f"{option} must be positive integers separated by commas, got '{text}'")
    return sorted(set(vals))
