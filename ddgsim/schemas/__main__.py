"""``python -m ddgsim.schemas``: print docs/formats.md (the formats' fields, from the schemas)."""

from ddgsim.schemas import markdown

print(markdown(), end="")
