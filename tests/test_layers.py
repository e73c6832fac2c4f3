"""The import contract: every module of ddgsim imports only from its own layer or the layers below.

Each import is read with ``ast`` from the source, at module level and inside functions alike
(``import ddgsim.x``, ``from ddgsim.x import y``, ``from ddgsim import x``, relative imports), so a
function-level import cannot hide an arrow that runs back up. The layers are :data:`LAYERS`,
lowest first (docs/architecture.md, "Layers"); a module takes the layer of the longest entry that
names it or a package above it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ddgsim"

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ground: errors, logs, files, the allocator", ("ddgsim", "ddgsim.errors", "ddgsim.logs", "ddgsim.fileio",
                                                   "ddgsim.malloc")),
    ("base: formats and the contracts every model shares",
     ("ddgsim.schemas", "ddgsim.models", "ddgsim.replicas", "ddgsim.schedule", "ddgsim.trace",
      "ddgsim.scenarios", "ddgsim.theory")),
    ("profile: a model's per-unit costs", ("ddgsim.profile",)),
    ("predict: scenarios and the timing and memory models", ("ddgsim.predict",)),
    ("plan: splits, the search, plan files", ("ddgsim.plan",)),
    ("execute: the executor and the in-process engine", ("ddgsim.execute",)),
    ("calibrate: this machine's links, contention and overheads, measured by running the executor",
     ("ddgsim.calibrate",)),
    ("studies: validation, pilot trainings, the theory's checks", ("ddgsim.compare", "ddgsim.converge")),
    # The plan use case ranks Ks by pilot trainings (objective="time-to-loss"): it stands on converge.
    ("use cases over the studies", ("ddgsim.planner",)),
    ("commands: one module per subcommand", ("ddgsim.commands",)),
    ("entry points", ("ddgsim.cli", "ddgsim.__main__")),
)

ALLOWED: frozenset[tuple[str, str]] = frozenset()
"""(importer, imported) pairs that run back up, each with its reason beside it; none today."""


def module_name(path: Path) -> str:
    """``ddgsim/plan/search.py`` -> ``ddgsim.plan.search``; a package's ``__init__.py`` is the package."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of the longest entry that is ``module`` or a package above it (the
    package ``ddgsim`` itself is its ``__init__`` alone)."""
    best: tuple[int, int] | None = None
    for i, (_, names) in enumerate(LAYERS):
        for name in names:
            names_it = module == name or (name != "ddgsim" and module.startswith(name + "."))
            if names_it and (best is None or len(name) > best[0]):
                best = (len(name), i)
    if best is None:
        raise LookupError(module)
    return best[1]


def imported(module: str, tree: ast.AST) -> list[tuple[int, str]]:
    """(line, ddgsim module) of every import in ``tree``, however deep: ``from P import n`` names the
    submodule ``P.n`` where there is one, else ``P``."""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "ddgsim"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            if source.split(".")[0] != "ddgsim":
                continue
            for a in node.names:
                sub = f"{source}.{a.name}"
                out.append((node.lineno, sub if sub in MODULES else source))
    return sorted(set(out))


def test_every_module_has_a_layer() -> None:
    unplaced = []
    for module in MODULES:
        try:
            layer_of(module)
        except LookupError:
            unplaced.append(module)
    assert not unplaced, f"modules in no layer (add them to LAYERS): {unplaced}"


def test_imports_point_down() -> None:
    upward = []
    for module, path in MODULES.items():
        mine = layer_of(module)
        for line, target in imported(module, ast.parse(path.read_text(), str(path))):
            theirs = layer_of(target)
            if theirs > mine and (module, target) not in ALLOWED:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({LAYERS[mine][0].split(':')[0]}) "
                              f"imports {target} ({LAYERS[theirs][0].split(':')[0]})")
    assert not upward, "imports that run back up:\n" + "\n".join(upward)


@pytest.mark.parametrize(("module", "layer"), [
    ("ddgsim.plan.search", "plan"), ("ddgsim.planner", "use cases over the studies"),
    ("ddgsim.theory.bounds", "base"), ("ddgsim.converge.theory_check", "studies"), ("ddgsim", "ground"),
])
def test_layer_of(module: str, layer: str) -> None:
    assert LAYERS[layer_of(module)][0].startswith(layer)


def test_imported_reads_function_level_and_relative_imports() -> None:
    tree = ast.parse("def f():\n    from ddgsim.profile import format\n    import ddgsim.predict.scenario\n"
                     "from . import search\nfrom .. import errors\n")
    assert imported("ddgsim.plan.build", tree) == [
        (2, "ddgsim.profile.format"), (3, "ddgsim.predict.scenario"), (4, "ddgsim.plan.search"), (5, "ddgsim.errors")]
