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
