"""A plan in the form PyTorch's pipeline runtime takes: one stage module per stage of the split.

``torch.distributed.pipelining`` runs a model already cut into stages: each rank
wraps its own ``nn.Module`` in a ``PipelineStage`` and hands it to a schedule
(``ScheduleGPipe``, ``Schedule1F1B``). :func:`stage_modules` cuts the plan's model
at the plan's split exactly as the ddgsim executor does (the units between legal cut
points, grouped per stage); :func:`pipeline_stage` wraps one of them::

    from ddgsim.plan.export import pipeline_stage
    from torch.distributed.pipelining import ScheduleGPipe

    stage = pipeline_stage("plan.json", rank, torch.device("cuda", rank))
    schedule = ScheduleGPipe(stage, n_microbatches=plan.micro_batches, loss_fn=loss_fn)
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from ddgsim.errors import UserError
from ddgsim.plan.format import Plan


def _plan(plan: Plan | str | os.PathLike[str]) -> Plan:
    from ddgsim.plan.format import load

    return plan if isinstance(plan, Plan) else load(plan)


def stage_modules(plan: Plan | str | os.PathLike[str], seed: int = 0) -> list[nn.Sequential]:
    """The plan's model (built with ``seed``) cut into its stages, in order."""
    from ddgsim.models.registry import build_model, get_spec
    from ddgsim.profile.units import build_stages, split_units

    p = _plan(plan)
    spec = get_spec(p.model)
    units = split_units(build_model(spec, seed=seed), spec.io, batch_size=2)
    if p.stages[-1].units[1] != len(units):
        raise UserError(f"the plan splits {p.stages[-1].units[1]} units but model '{p.model}' has {len(units)}; "
                        "re-plan for this model")
    return list(build_stages(units, p.split))


def pipeline_stage(plan: Plan | str | os.PathLike[str], stage_index: int, device: Any, group: Any = None,
                   seed: int = 0) -> Any:
    """``torch.distributed.pipelining.PipelineStage`` for stage ``stage_index`` of the plan, on ``device``.

    Needs an initialised default process group (one rank per stage) unless ``group`` is given.
    """
    from torch.distributed.pipelining import PipelineStage

    p = _plan(plan)
    if not 0 <= stage_index < len(p.stages):
        raise UserError(f"stage index {stage_index} is not in 0..{len(p.stages) - 1}")
    module = stage_modules(p, seed)[stage_index].to(device)
    return PipelineStage(module, stage_index, len(p.stages), device, group=group)
