"""Legal cut points of a model and the units between them (torch.fx + networkx dominators).

A *cut point* is a node every input→output path passes through: cutting there sends
exactly one tensor to the next stage, and no skip connection is ever cut. These are
the dominators of the output node in the data-flow graph, rooted at the input
(Lengauer–Tarjan, via ``networkx.immediate_dominators``).

Not every dominator makes a good cut: inside a residual block the ``add`` and the
final ``relu`` both dominate the output, but a cut between them would split the
block. So a module whose ``forward`` contains a branch (a region between two
consecutive dominators with more than one node) is *atomic*: no cut lands strictly
inside it. Containers (``Sequential``, ``ModuleList``, ``ModuleDict``) are never
atomic. For the CIFAR ResNets this gives conv1, bn1, relu, one unit per residual
block, avgpool, flatten, fc.

Limitation: ``symbolic_trace`` bakes Python-level values (``self.training`` read in
``forward``, shapes used in control flow) into the graph at trace time.
"""

from __future__ import annotations

import contextlib
import io as io_module
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import networkx as nx
import torch
import torch.fx as fx
from torch import nn

from ddgsim.errors import UserError
from ddgsim.models.io import ModelIO

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass(frozen=True, kw_only=True)
class Unit:
    """The layers between two consecutive legal cut points: one tensor in, one out."""

    index: int
    """Position in the model, 0-based."""
    name: str
    """Module path of the unit (``conv1``, ``layer1.0``, ``fc``) or its fx node name."""
    module: nn.Module
    """An ``fx.GraphModule`` sharing parameters (and buffers) with the original model."""
    output_shape: tuple[int, ...]
    """Output shape for the example batch, batch dimension included."""


def trace_graph(model: nn.Module) -> tuple[fx.GraphModule, nx.DiGraph]:
    """Trace ``model`` with ``torch.fx.symbolic_trace``; return it and its data-flow graph.

    The DiGraph has one vertex per fx node name and an edge from each node to each of
    its users; ``get_attr`` nodes (parameters, buffers, constants) are left out.
    Models with more than one input or output raise :class:`UserError`.
    """
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(
            f"cannot trace model {type(model).__name__} with torch.fx: {type(exc).__name__}: {first} "
            "(torch.fx follows every submodule's forward, which must not branch or loop on tensor values: "
            "fix such choices in __init__; build shape-dependent tensors from the input, e.g. "
            "x.new_ones(t, t), or register them as buffers, e.g. a causal mask)"
        ) from None
    gm.graph.eliminate_dead_code()
    gm.recompile()
    gm.train(model.training)
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise UserError(
            f"model {type(model).__name__} takes {len(inputs)} inputs "
            f"({', '.join(n.name for n in inputs)}); only models with one tensor input can be cut "
            "(wrap it in a module whose forward takes one tensor and builds the others)"
        )
    out = _output_node(gm)
    if not isinstance(out.args[0], fx.Node):
        raise UserError(
            f"model {type(model).__name__} returns a {type(out.args[0]).__name__.removeprefix('immutable_')}; "
            "only models with one tensor output can be cut (return the logits alone)"
        )
    return gm, _graph_of(gm)


def _output_node(gm: fx.GraphModule) -> fx.Node:
    out: fx.Node = next(n for n in reversed(gm.graph.nodes) if n.op == "output")
    return out


def _dominator_chain(gm: fx.GraphModule, g: nx.DiGraph) -> list[fx.Node]:
    """Compute nodes dominating the output, in execution order (input and output excluded)."""
    nodes = {n.name: n for n in gm.graph.nodes}
    source = next(n for n in gm.graph.nodes if n.op == "placeholder")
    out = _output_node(gm)
    idom = nx.immediate_dominators(g, source.name)
    if out.name not in idom:
        raise UserError("the model's output does not depend on its input; nothing to cut")
    chain: list[fx.Node] = []
    cur = idom[out.name]
    while cur != source.name:
        chain.append(nodes[cur])
        cur = idom[cur]
    return chain[::-1]


def _stack(node: fx.Node) -> list[str]:
    """Module paths enclosing ``node``, outermost first (root excluded)."""
    stack = node.meta.get("nn_module_stack") or {}
    return [v[0] if isinstance(v, tuple) else str(k) for k, v in stack.items()]


def _common(stacks: Sequence[list[str]]) -> list[str]:
    prefix: list[str] = []
    for level in zip(*stacks, strict=False):
        if any(p != level[0] for p in level):
            break
        prefix.append(level[0])
    return prefix


def _compute_nodes(gm: fx.GraphModule, g: nx.DiGraph) -> list[fx.Node]:
    """Nodes reachable from the input, in execution order (input and output excluded)."""
    source = next(n for n in gm.graph.nodes if n.op == "placeholder")
    reach = nx.descendants(g, source.name)
    return [n for n in gm.graph.nodes if n.name in reach and n.op != "output"]


def _legal_cuts(gm: fx.GraphModule, g: nx.DiGraph) -> list[fx.Node]:
    root = gm
    compute = _compute_nodes(gm, g)
    doms = _dominator_chain(gm, g)
    last = _output_node(gm).args[0]
    assert isinstance(last, fx.Node)
    if last not in compute:
        raise UserError("the model's output is its input or a constant; there is nothing to cut")
    if not doms or doms[-1] is not last:
        doms.append(last)
    pos = {n: i for i, n in enumerate(compute)}
    # Regions between consecutive dominators; a branching region makes its module atomic.
    atomic: set[str] = set()
    start = 0
    for d in doms:
        end = pos[d] + 1
        region = compute[start:end]
        if len(region) > 1:
            common = _common([_stack(n) for n in region])
            if common:
                path = common[-1]
                try:
                    mod = root.get_submodule(path)
                except AttributeError:
                    mod = None
                if not isinstance(mod, _CONTAINERS):
                    atomic.add(path)
        start = end
    cuts: list[fx.Node] = []
    for d in doms:
        i = pos[d]
        if i + 1 < len(compute):
            shared = _common([_stack(d), _stack(compute[i + 1])])
            if any(p in atomic for p in shared):
                continue
        cuts.append(d)
    return cuts


def cut_points(gm: fx.GraphModule) -> list[str]:
    """Names of the nodes after which the model may be cut, in execution order.

    Each is a node every input→output path passes through and that does not lie
    strictly inside a module with a skip connection. Unit ``i`` ends at
    ``cut_points(gm)[i]``; the last entry is the node that produces the model's output.
    """
    g = _graph_of(gm)
    return [n.name for n in _legal_cuts(gm, g)]


def _graph_of(gm: fx.GraphModule) -> nx.DiGraph:
    g = nx.DiGraph()
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            continue
        g.add_node(node.name)
        for user in node.users:
            g.add_edge(node.name, user.name)
    return g


def _unit_name(nodes: list[fx.Node]) -> str:
    common = _common([_stack(n) for n in nodes])
    if common:
        return common[-1]
    first, last = nodes[0], nodes[-1]

    def label(n: fx.Node) -> str:
        return str(n.target) if n.op == "call_module" else n.name

    return label(first) if len(nodes) == 1 else f"{label(first)}..{label(last)}"


def _build_unit(model: nn.Module, gm: fx.GraphModule, entry: fx.Node, nodes: list[fx.Node],
                reach: set[str], name: str) -> fx.GraphModule:
    """Copy ``nodes`` into a new graph whose single input stands for ``entry``."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {entry: graph.placeholder("x")}
    members = set(nodes)

    def lookup(n: fx.Node) -> fx.Node:
        if n in env:
            return env[n]
        if n.name in reach and n not in members:
            raise UserError(
                f"unit {name} uses node {n.name} from an earlier unit; the model's graph "
                "has a data flow the cut-point analysis does not support"
            )
        # A constant (parameter, buffer, or something computed only from them): copy it.
        env[n] = graph.node_copy(n, lookup)
        return env[n]

    for n in nodes:
        env[n] = graph.node_copy(n, lookup)
    graph.output(env[nodes[-1]])
    unit = fx.GraphModule(gm, graph, class_name=f"Unit_{name.replace('.', '_')}")
    unit.training = model.training
    return unit


def split_units(model: nn.Module, io: ModelIO | Sequence[int], batch_size: int = 2) -> list[Unit]:
    """Cut ``model`` at every legal cut point; run an example batch for the output shapes.

    ``io`` is the model's input declaration (:class:`ddgsim.models.io.ModelIO`), or just
    one float sample's shape. A cut whose tensor is not floating point (token ids, masks)
    is dropped: nothing that cannot carry a gradient crosses between stages, so the
    stage that takes token ids is the one that embeds them.

    Units share parameters and buffers with ``model``. The example batch runs in eval
    mode under ``no_grad``, so BatchNorm running statistics are left untouched.
    """
    if not isinstance(io, ModelIO):
        io = ModelIO(input_shape=tuple(int(d) for d in io))
    gm, g = trace_graph(model)
    compute = _compute_nodes(gm, g)
    cuts = _legal_cuts(gm, g)
    reach = {n.name for n in compute}
    source = next(n for n in gm.graph.nodes if n.op == "placeholder")
    pos = {n: i for i, n in enumerate(compute)}
    while True:
        modules: list[tuple[str, fx.GraphModule]] = []
        seen: dict[str, int] = {}
        entry, start = source, 0
        for cut in cuts:
            nodes = compute[start : pos[cut] + 1]
            name = _unit_name(nodes)
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:
                name = f"{name}#{seen[name]}"
            modules.append((name, _build_unit(model, gm, entry, nodes, reach, name)))
            entry, start = cut, pos[cut] + 1
        outputs = _example_outputs(model, [m for _, m in modules], io, batch_size)
        integral = {i for i, (_, dtype) in enumerate(outputs[:-1]) if not dtype.is_floating_point}
        if not integral:
            break
        cuts = [c for i, c in enumerate(cuts) if i not in integral]
    return [
        Unit(index=i, name=name, module=mod, output_shape=shape)
        for i, ((name, mod), (shape, _)) in enumerate(zip(modules, outputs, strict=True))
    ]


def _example_outputs(model: nn.Module, modules: Sequence[nn.Module], io: ModelIO,
                     batch_size: int) -> list[tuple[tuple[int, ...], torch.dtype]]:
    """Shape and dtype of every unit's output on an example batch."""
    modes = {m: m.training for m in model.modules()}
    modes.update({m: m.training for unit in modules for m in unit.modules()})
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        x = io.example_input(batch_size).to(device)
        outputs = []
        # A failing fx.GraphModule prints its own multi-line trace to stderr before raising; the
        # one-line UserError below says it all.
        with torch.no_grad(), contextlib.redirect_stderr(io_module.StringIO()):
            for m in modules:
                m.eval()
                x = m(x)
                if not isinstance(x, torch.Tensor):
                    raise UserError(f"a unit of {type(model).__name__} returned {type(x).__name__}, not a tensor")
                outputs.append((tuple(x.shape), x.dtype))
    except (RuntimeError, IndexError, TypeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        kind = f"token ids < {io.vocab}" if io.tokens else "float32"
        raise UserError(
            f"model {type(model).__name__} fails on input shape {io.input_shape} ({kind}): {first} "
            "(declare the model's input: --input-shape, --vocab, or attributes input_shape/vocab_size)"
        ) from None
    finally:
        for m, mode in modes.items():
            m.training = mode
    return outputs


def build_stages(units: Sequence[Unit], split: Sequence[int]) -> list[nn.Sequential]:
    """Group units into stages; ``split`` lists the unit indices where stages 1.. begin."""
    n = len(units)
    bounds = [int(s) for s in split]
    if any(not 0 < s < n for s in bounds):
        raise UserError(f"split {list(split)}: every index must be in 1..{n - 1} ({n} units)")
    if any(a >= b for a, b in itertools.pairwise(bounds)):
        raise UserError(f"split {list(split)}: indices must be strictly increasing")
    edges = [0, *bounds, n]
    return [nn.Sequential(*(u.module for u in units[a:b])) for a, b in itertools.pairwise(edges)]
