"""One stage's exact DDG math: weight-stashed forward, delayed backward, update.

A :class:`StageWorker` owns one stage's module (the *live* weights), its own SGD
optimizer (one per stage, as the authors trained) and every piece of in-flight
state, and executes the schedule actions ``F``, ``B``, ``U``, ``W`` of that stage.
It does no communication: the caller hands it inputs and error gradients and
ships what it returns (:mod:`ddgsim.execute.engine` in one process,
:mod:`ddgsim.execute.runner` across processes), so both run exactly the same math.

**Weight stashing.** ``F t`` runs the forward with ``torch.func.functional_call``
on a snapshot of the stage's parameters (detached tensors with ``requires_grad``),
so the autograd graph of batch t holds exactly the weights batch t used. ``B t``
calls ``torch.autograd.grad`` w.r.t. the snapshot and the stage input, given the
received error gradient (on the last stage, the loss). ``U t`` copies the gradient
into ``p.grad`` and steps the stage's optimizer with the learning rate of iteration
``t + delay``. The gradient applied at iteration t is therefore exactly
∇_{w_k} f_{x(t−d)}(w^{t−d}), d = K−1−k (DESIGN.md, "The DDG update").

The snapshot is copy-on-write: ``F`` takes an alias of the live storage (``p.data``:
same memory, its own version counter, no copy); before an ``U`` whose in-place step
would overwrite weights an in-flight batch still aliases, the live parameters move
to a fresh copy and the old storage stays with the stashed graphs. So ``bp`` never
copies, and DDG copies each parameter once per update.

**Memory this costs** (stage k of K, d = K−1−k, ``ddg``/``ddg-pipelined``): the live
parameters, their gradient and the momentum buffer, plus **d = K−1−k stashed
parameter versions** beyond the live ones (the versions in-flight batches were
forwarded with; ``ddgsim.predict.memory.stage_memory`` counts the same ``stashed_versions``),
plus the autograd-saved activations of up to **K−k in-flight batches** (for k > 0
also their K−k stage inputs, kept for checkpoints). Stage 0 pays most; the last
stage keeps nothing across iterations. ``bp``/``gpipe``/``1f1b`` stash nothing
beyond the live weights.

**Randomness.** Each worker keeps its own CPU RNG state and swaps it in around
every forward, so dropout-like layers draw the same numbers whether the stages
run in one process or in K, and a resumed run replays them exactly.

**Checkpoints.** An autograd graph cannot be pickled: :meth:`StageWorker.state_dict`
stores each in-flight batch's stage input, parameter snapshot and RNG state, and
:meth:`StageWorker.load_state_dict` recomputes the forward to rebuild the graph
(bit-identical on CPU: same inputs, same weights, same kernels). The recompute
runs on cloned buffers, so BatchNorm running statistics are not updated twice.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ddgsim.theory.bounds import stability_ratio

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """SGD settings shared by every stage (each stage gets its own optimizer)."""

    lr: float | Callable[[int], float]
    """Learning rate, or a function of the iteration index t (0-based) giving γ_t."""
    momentum: float = 0.0
    """Heavy-ball momentum (0 disables)."""
    nesterov: bool = False
    """Nesterov momentum (needs momentum > 0)."""
    weight_decay: float = 0.0
    """L2 penalty added to the gradient by ``torch.optim.SGD``."""
    warmup: int = 0
    """Staleness compensation: the rate rises linearly over the first ``warmup`` iterations,
    γ_t · min(1, (t+1)/warmup) (0: none)."""
    delay_scaled_lr: bool = False
    """Staleness compensation: stage k's rate is multiplied by its stability limit over BP's,
    cos(τπ/(2τ+1)) for its delay τ (:func:`ddgsim.theory.bounds.stability_ratio`)."""
    predict_weights: bool = False
    """Staleness compensation: a stage with delay τ forwards (and later backprops) batch t with
    its weights extrapolated along the momentum, ŵ = w − τ·γ_t·v (PipeMare, SpecTrain), and applies
    the gradient to its live weights."""

    def __post_init__(self) -> None:
        if self.nesterov and self.momentum <= 0:
            raise ValueError(f"nesterov needs momentum > 0, got momentum={self.momentum}")
        if self.momentum < 0 or self.weight_decay < 0:
            raise ValueError(
                f"momentum ({self.momentum}) and weight_decay ({self.weight_decay}) must be >= 0"
            )
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0 iterations, got {self.warmup}")
        if self.predict_weights and self.momentum <= 0:
            raise ValueError("weight prediction extrapolates along the momentum: it needs momentum > 0")

    def lr_at(self, t: int) -> float:
        """γ_t, the learning rate of iteration t (warm-up included; before any per-stage scale)."""
        base = float(self.lr(t)) if callable(self.lr) else float(self.lr)
        return base * min(1.0, (t + 1) / self.warmup) if self.warmup else base


@dataclass(frozen=True)
class StepDecay:
    """γ_t = base · factor^(number of milestones ≤ t): the paper's ÷10 at epochs 150, 225."""

    base: float
    milestones: tuple[int, ...] = ()
    """Iteration indices (not epochs) where the rate is multiplied by ``factor``."""
    factor: float = 0.1

    def __call__(self, t: int) -> float:
        return self.base * self.factor ** sum(1 for m in self.milestones if t >= m)


@dataclass(frozen=True, kw_only=True)
class Applied:
    """What one ``U`` action applied to one stage."""

    iteration: int
    """Iteration t of the update (``batch + delay``); the result is w_k^{t+1}."""
    batch: int
    """Batch s whose gradient was applied (s = t − delay)."""
    lr: float
    """γ_t used for the step."""
    grad: Tensor | None = None
    """Flat gradient ∇_{w_k} f_{x(s)}(w^s) over the trainable parameters (only when recording)."""
    weights_used: Tensor | None = None
    """Flat snapshot of this stage's parameters that batch s was forwarded with (when recording)."""


@dataclass
class _Micro:
    x: Tensor
    """The stage input as received (detached)."""
    y: Tensor | None
    rng: Tensor
    """CPU RNG state just before the forward."""
    weight: float
    """Share of this micro-batch in the batch loss (1 for unsplit batches)."""
    x_req: Tensor | None = None
    out: Tensor | None = None
    done: bool = False


@dataclass
class _Stash:
    params: list[Tensor]
    """Snapshot of every parameter (trainable ones with requires_grad)."""
    aliased: bool = False
    """The snapshot still shares storage with the live parameters (copy-on-write)."""
    micros: dict[int, _Micro] = field(default_factory=dict)
    flat: Tensor | None = None


def flat(tensors: Sequence[Tensor]) -> Tensor:
    """Concatenate tensors into one detached 1-D CPU tensor."""
    if not tensors:
        return torch.zeros(0)
    return torch.cat([t.detach().reshape(-1).cpu() for t in tensors])


class StageWorker:
    """Executes the actions of one stage on its module; holds all of that stage's state."""

    def __init__(
        self,
        module: nn.Module,
        *,
        index: int,
        num_stages: int,
        delay: int,
        optim: OptimConfig,
        loss_fn: LossFn | None = None,
        micro_batches: int = 1,
        record: bool = False,
        seed: int = 0,
    ) -> None:
        self.module = module
        self.index = index
        self.delay = delay
        self.optim = optim
        self.loss_fn = loss_fn
        self.micro_batches = micro_batches
        self.record = record
        self.is_last = index == num_stages - 1
        if self.is_last and loss_fn is None:
            raise ValueError("the last stage needs a loss_fn")
        self.names = [n for n, _ in module.named_parameters()]
        self.params = [p for _, p in module.named_parameters()]
        self.trainable = [i for i, p in enumerate(self.params) if p.requires_grad]
        self.optimizer = torch.optim.SGD(
            [self.params[i] for i in self.trainable] or [nn.Parameter(torch.zeros(0))],
            lr=optim.lr_at(0),
            momentum=optim.momentum,
            nesterov=optim.nesterov,
            weight_decay=optim.weight_decay,
            # One multi-tensor kernel call per op instead of a Python loop over tensors:
            # the loop cost ~35 ms per step for ResNet-56 (167 tensors) on the dev VM.
            foreach=True,
        )
        self.lr_scale = stability_ratio(delay) if optim.delay_scaled_lr else 1.0
        """This stage's factor on every rate (:attr:`OptimConfig.delay_scaled_lr`)."""
        gen = torch.Generator().manual_seed(seed * 1009 + index)
        self.rng: Tensor = gen.get_state()
        self.stash: dict[int, _Stash] = {}
        self.grads: dict[int, list[Tensor]] = {}
        self.losses: dict[int, float] = {}
        self.applied: list[Applied] = []

    # -- actions -----------------------------------------------------------------
    def forward(self, t: int, x: Tensor, y: Tensor | None = None, *, micro: int = 0,
                weight: float = 1.0) -> Tensor | None:
        """``F t``: forward batch t (micro-batch ``micro``) on a snapshot of the live weights.

        Returns the output to send to the next stage (detached), or ``None`` on the
        last stage, which computes the loss against ``y`` instead.
        """
        st = self.stash.get(t)
        if st is None and self.optim.predict_weights and self.delay > 0:
            st = self.stash[t] = _Stash(self._predicted(t), aliased=False)
        elif st is None:
            # p.data: same storage, own version counter -> the live step cannot trip autograd;
            # update() moves the live weights away before writing over an aliased snapshot.
            st = self.stash[t] = _Stash(
                [p.data.requires_grad_(p.requires_grad) for p in self.params], aliased=True
            )
        m = _Micro(x=x.detach(), y=y, rng=self.rng, weight=weight)
        st.micros[micro] = m
        self._run_forward(st, m, buffers=None)
        if self.is_last:
            assert m.out is not None
            self.losses[t] = self.losses.get(t, 0.0) + float(m.out.detach())
            return None
        assert m.out is not None
        return m.out.detach()

    def _run_forward(self, st: _Stash, m: _Micro, buffers: dict[str, Tensor] | None) -> None:
        m.x_req = m.x.detach().requires_grad_(True) if self.index > 0 and m.x.is_floating_point() else m.x
        tensors: dict[str, Tensor] = dict(zip(self.names, st.params, strict=True))
        if buffers:
            tensors.update(buffers)
        saved = torch.get_rng_state()
        torch.set_rng_state(m.rng)
        try:
            out = functional_call(self.module, tensors, (m.x_req,))
            self.rng = torch.get_rng_state()
        finally:
            torch.set_rng_state(saved)
        if self.is_last:
            assert self.loss_fn is not None and m.y is not None
            out = self.loss_fn(out, m.y)
            if m.weight != 1.0:
                out = out * m.weight
        m.out = out

    def _predicted(self, t: int) -> list[Tensor]:
        """The weights batch t is forwarded with under weight prediction: w − τ·γ_t·v per parameter
        (v: its momentum buffer; none yet, or not trainable: w), new tensors (never aliased)."""
        step = self.delay * self.optim.lr_at(t) * self.lr_scale
        out = []
        with torch.no_grad():
            for p in self.params:
                buf = self.optimizer.state.get(p, {}).get("momentum_buffer") if p.requires_grad else None
                w = p.data.clone() if buf is None else p.data - step * buf
                out.append(w.requires_grad_(p.requires_grad))
        return out

    def loss_of(self, t: int) -> float:
        """The last stage's loss of batch t (sum over micro-batches of weight·loss)."""
        return self.losses[t]

    def completes(self, t: int, micro: int) -> bool:
        """Whether ``B t`` of ``micro`` is batch t's last backward on this stage (its gradient is whole after it)."""
        st = self.stash[t]
        return len(st.micros) == self.micro_batches and all(
            mm.done for j, mm in st.micros.items() if j != micro)

    def backward(self, t: int, grad_out: Tensor | None = None, *, micro: int = 0,
                 on_grad: Callable[[int, Tensor], None] | None = None) -> Tensor | None:
        """``B t``: gradients of batch t at its stashed weights; returns the input gradient.

        ``grad_out`` is the error gradient received from the next stage (``None`` on
        the last stage). Returns ``None`` on stage 0 (nothing to send back).
        ``on_grad(j, g)`` is called during the backward, as soon as the j-th trainable
        parameter's gradient is computed, with its total over the batch's micro-batches so far
        (the same tensor that ends in :attr:`grads`): gradient buckets start their all-reduce
        from it (:mod:`ddgsim.execute.buckets`).
        """
        st = self.stash[t]
        m = st.micros[micro]
        assert m.out is not None and not m.done
        want = [st.params[i] for i in self.trainable]
        acc = self.grads.get(t)
        totals: dict[int, Tensor] = {}
        handles = []
        if on_grad is not None:
            def hook(j: int, g: Tensor) -> None:
                totals[j] = g if acc is None else acc[j] + g
                on_grad(j, totals[j])

            handles = [p.register_hook(functools.partial(hook, j)) for j, p in enumerate(want)]  # type: ignore[no-untyped-call]
        send_back = self.index > 0 and m.x_req is not None and m.x_req.requires_grad
        inputs: list[Tensor] = list(want)
        if send_back:
            assert m.x_req is not None
            inputs.append(m.x_req)
        try:
            if not inputs:  # a stage without parameters that sends nothing back (e.g. a first ``flatten``)
                grads: tuple[Tensor | None, ...] = ()
            elif self.is_last:
                grads = torch.autograd.grad(m.out, inputs, allow_unused=True)
            else:
                assert grad_out is not None
                grads = torch.autograd.grad(m.out, inputs, grad_outputs=grad_out, allow_unused=True)
        finally:
            for h in handles:
                h.remove()
        pgrads = [torch.zeros_like(p) if g is None else g for p, g in zip(want, grads, strict=False)]
        self.grads[t] = pgrads if acc is None else [
            totals[j] if j in totals else a + g for j, (a, g) in enumerate(zip(acc, pgrads, strict=True))]
        m.done, m.out, m.x_req = True, None, None
        gin = grads[-1] if send_back else None
        if all(mm.done for mm in st.micros.values()) and len(st.micros) == self.micro_batches:
            if self.record:
                st.flat = flat(st.params)
            else:
                del self.stash[t]
        return None if gin is None else gin.detach()

    def update(self, t: int) -> Applied:
        """``U t``: apply batch t's gradient with the rate of iteration t + delay."""
        grads = self.grads.pop(t)
        it = t + self.delay
        lr = self.optim.lr_at(it) * self.lr_scale
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if any(st.aliased for st in self.stash.values()):
            with torch.no_grad():
                for p in self.params:
                    p.data = p.data.clone()
            for st in self.stash.values():
                st.aliased = False
        for i, g in zip(self.trainable, grads, strict=True):
            self.params[i].grad = g
        self.optimizer.step()
        for i in self.trainable:
            self.params[i].grad = None
        rec = Applied(iteration=it, batch=t, lr=lr)
        if self.record:
            st = self.stash.pop(t)
            rec = Applied(iteration=it, batch=t, lr=lr, grad=flat(grads), weights_used=st.flat)
        self.applied.append(rec)
        return rec

    def flat_weights(self) -> Tensor:
        """This stage's live parameters as one flat CPU tensor (a copy)."""
        return flat(self.params).clone()

    # -- checkpoints ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-identically (tensors and plain values only)."""
        stash: dict[int, Any] = {}
        for t, st in self.stash.items():
            stash[t] = {
                "params": [p.detach().clone() for p in st.params],
                "flat": st.flat,
                "micros": {
                    mi: {"x": m.x, "y": m.y, "rng": m.rng, "weight": m.weight, "done": m.done}
                    for mi, m in st.micros.items()
                },
            }
        return {
            "module": {k: v.detach().clone() for k, v in self.module.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "rng": self.rng.clone(),
            "stash": stash,
            "grads": {t: [g.clone() for g in gs] for t, gs in self.grads.items()},
            "losses": dict(self.losses),
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device | None = None) -> None:
        """Restore :meth:`state_dict` and recompute the forward of every in-flight batch.

        ``device``: where the stage runs; gradients, stashed weights and in-flight inputs are moved
        there (a checkpoint is read onto the CPU), random-number states stay on the CPU."""
        dev = device if device is not None else torch.device("cpu")
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])  # casts its state to the parameters' device
        self.rng = state["rng"].clone()
        self.grads = {int(t): [g.to(dev) for g in gs] for t, gs in state["grads"].items()}
        self.losses = {int(t): float(v) for t, v in state["losses"].items()}
        self.stash = {}
        buffers = {n: b.detach().clone() for n, b in self.module.named_buffers()}
        for t, raw in sorted(state["stash"].items()):
            params = [
                p.detach().to(dev, copy=True).requires_grad_(live.requires_grad)
                for p, live in zip(raw["params"], self.params, strict=True)
            ]
            st = self.stash[int(t)] = _Stash(params, flat=raw["flat"])
            for mi, rm in sorted(raw["micros"].items()):
                m = _Micro(x=rm["x"].to(dev), y=_to(rm["y"], dev), rng=rm["rng"], weight=float(rm["weight"]),
                           done=bool(rm["done"]))
                st.micros[int(mi)] = m
                if not m.done:
                    keep = self.rng
                    self._run_forward(st, m, buffers={k: v.clone() for k, v in buffers.items()})
                    self.rng = keep


def _to(t: Tensor | None, device: torch.device) -> Tensor | None:
    return None if t is None else t.to(device)
