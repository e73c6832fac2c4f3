"""Which machine a profile describes: a fingerprint of the hardware and software that set its figures.

A profile's times hold for one CPU (model, instruction set, cores, memory), one torch
build, one allocator setting and one thread count — or one GPU, driver and CUDA. The
fingerprint records all of it; :func:`machine_key` hashes the part that identifies the
machine (not the date, the load, the host name), so two profiles with the same key were
measured on interchangeable machines and a profile with another key describes someone
else's. Reading the fingerprint is cheap and torch-free unless a GPU is asked about.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from typing import Any

KEY_FIELDS = ("cpu_model", "cpu_flags_sha", "cpu_count", "memory_gib", "torch", "torch_build", "hugepages", "gpu")
"""Fingerprint fields that make up :func:`machine_key` (threads, dtype and method are part of the request)."""


def _cpuinfo() -> tuple[str, list[str]]:
    model, flags = "", list[str]()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if not model and line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif not flags and line.startswith(("flags", "Features")):
                    flags = sorted(set(line.split(":", 1)[1].split()))
                if model and flags:
                    break
    except OSError:
        pass
    return model or platform.processor() or platform.machine() or "unknown cpu", flags


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def hugepages_in_effect() -> bool:
    """Whether malloc asks for transparent huge pages in this process (see :mod:`ddgsim.malloc`)."""
    from ddgsim.malloc import _thp_available

    return "glibc.malloc.hugetlb=1" in os.environ.get("GLIBC_TUNABLES", "") and _thp_available()


def torch_build() -> tuple[str, str]:
    """torch's version and build (``cpu``, ``cuda 12.1``, ``rocm 6.0``), read from ``torch/version.py``
    without importing torch, so the answer is the same before and after ``import torch``."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return "none", "none"
    found: dict[str, object] = {}
    try:
        with open(os.path.join(next(iter(spec.submodule_search_locations)), "version.py")) as fh:
            tree = ast.parse(fh.read())
    except (OSError, SyntaxError):
        return "unknown", "unknown"
    for node in tree.body:
        if isinstance(node, ast.Assign):
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name):
            with contextlib.suppress(ValueError):
                found[target.id] = ast.literal_eval(value)
    cuda, hip = found.get("cuda"), found.get("hip")
    build = f"cuda {cuda}" if cuda else f"rocm {hip}" if hip else "cpu"
    return str(found.get("__version__", "unknown")), build


def _gpu(device: str) -> dict[str, Any] | None:
    if not device.startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    dev = torch.device(device)
    props = torch.cuda.get_device_properties(dev)
    driver = None
    try:
        import subprocess

        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=10, check=False).stdout.split()[:1]
    except (OSError, subprocess.SubprocessError):
        driver = None
    return {"name": torch.cuda.get_device_name(dev), "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda,
            "driver": driver[0] if driver else None}


def fingerprint(device: str = "cpu") -> dict[str, Any]:
    """This machine, as far as it sets a profile's figures (``device``: ``cpu`` or ``cuda[:i]``)."""
    model, flags = _cpuinfo()
    torch_version, build = torch_build()
    from ddgsim.malloc import _state

    return {
        "cpu_model": model,
        "cpu_flags_sha": hashlib.sha256(" ".join(flags).encode()).hexdigest()[:12],
        "cpu_simd": [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile", "neon", "asimd") if f in flags],
        "cpu_count": _cpu_count(),
        "memory_gib": _memory_gib(),
        "torch": torch_version,
        "torch_build": build,
        "hugepages": hugepages_in_effect(),
        "malloc_tuned": bool(_state.get("done", False)),
        "gpu": _gpu(device),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def machine_key(fp: dict[str, Any]) -> str:
    """12 hex digits identifying the machine of a fingerprint (:data:`KEY_FIELDS` only)."""
    core = {k: fp.get(k) for k in KEY_FIELDS}
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:12]


def describe(fp: dict[str, Any] | None) -> str:
    """One phrase naming a machine: ``Intel Xeon @ 2.50GHz, 2 CPUs, torch 2.13.0`` or the GPU."""
    if not fp:
        return "an unrecorded machine"
    gpu = fp.get("gpu")
    if isinstance(gpu, dict) and gpu.get("name"):
        return f"{gpu['name']} (driver {gpu.get('driver') or '?'}, CUDA {gpu.get('cuda') or '?'}), torch {fp.get('torch')}"
    pages = ", huge pages" if fp.get("hugepages") else ""
    return f"{fp.get('cpu_model')}, {fp.get('cpu_count')} CPUs, torch {fp.get('torch')}{pages}"


def device_kind(name: str) -> str | None:
    """``cpu`` or ``gpu`` for a scenario device, from its name's prefix; else ``None``."""
    low = name.lower()
    return "gpu" if low.startswith(("gpu", "cuda")) else "cpu" if low.startswith("cpu") else None


def provenance_note(prof: Any, where: str, scenario: Any = None) -> str | None:
    """One line when ``prof`` does not describe this machine, or is a CPU profile on GPU devices.

    ``prof`` is a :class:`ddgsim.profile.format.Profile`, ``where`` its file (or source),
    ``scenario`` the :class:`ddgsim.predict.scenario.Scenario` it predicts for. ``None``: nothing to say.
    """
    notes = []
    here = fingerprint(prof.device)
    if prof.machine_key != machine_key(here):
        date = f", {prof.meta['date'][:10]}" if isinstance(prof.meta.get("date"), str) else ""
        threads = f" --threads {prof.threads}" if prof.threads not in (None, 1) else ""
        theirs = describe(prof.machine) if prof.machine else (
            f"{prof.meta.get('device_name', 'a machine')} (torch {prof.meta.get('torch_version', '?')}, "
            "no fingerprint recorded)")
        notes.append(f"the figures describe {theirs} ({os.path.basename(where)}{date}), not this machine "
                     f"({describe(here)}); measure this one with: ddgsim profile {prof.model} "
                     f"--batch-size {prof.batch_size}{threads}")
    if scenario is not None:
        kinds = {device_kind(d.name) for d in scenario.devices}
        if prof.device == "cpu" and "gpu" in kinds:
            notes.append(f"a CPU profile on scenario '{scenario.name}' of GPUs: times are the CPU's, "
                         "divided by the devices' speeds")
    return "note: " + "; ".join(notes) if notes else None


def _cpu_times() -> list[int] | None:
    """The machine's CPU times since boot, in jiffies, from the first line of ``/proc/stat``: user,
    nice, system, idle, iowait, irq, softirq, steal (as many as the kernel gives); ``None`` without it."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    return [int(v) for v in fields[1:9]]


def cpu_jiffies() -> tuple[int, int] | None:
    """(stolen, total) CPU time of the whole machine since boot, in jiffies, from ``/proc/stat``.

    *Stolen* is time the hypervisor ran something else while a vCPU of this VM wanted to run:
    on a shared cloud VM it comes in bursts and makes wall-clock measurements slow for a while.
    ``None`` where there is no ``/proc/stat``.
    """
    values = _cpu_times()
    if values is None:
        return None
    return (values[7] if len(values) > 7 else 0), sum(values)


def busy_reading() -> tuple[float, float, float] | None:
    """(seconds the machine's CPUs were busy since boot, this process's CPU seconds, a monotonic
    wall clock): two readings give :func:`other_load`. ``None`` where there is no ``/proc/stat``."""
    values = _cpu_times()
    try:
        tick = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    if values is None or len(values) < 7:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = values[:7]
    return (user + nice + system + irq + softirq) / tick, time.process_time(), time.perf_counter()


def other_load(before: tuple[float, float, float] | None, after: tuple[float, float, float] | None) -> float | None:
    """CPUs kept busy by everything but this process between two :func:`busy_reading` s, on average
    (0: nothing else ran; 1: one CPU's worth). Unlike the load average, which decays over a minute,
    it holds only the interval itself — a measurement right after a busy minute is not called loaded."""
    if before is None or after is None or after[2] <= before[2]:
        return None
    return max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / (after[2] - before[2]))


def loadavg() -> list[float] | None:
    """The 1, 5 and 15-minute load averages, rounded; ``None`` where the OS has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def steal_pct(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Percent of the machine's CPU time stolen between two :func:`cpu_jiffies` readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return 100.0 * (after[0] - before[0]) / (after[1] - before[1])
