"""Soak test of the executor: many back-to-back ``ddgsim execute`` launches, each a fresh process tree.

Run: ``.venv/bin/python benchmarks/soak_executor.py [--runs 20] [--seed 0] [--configs SUBSTR,...]
[--json FILE] [--keep DIR]``

The matrix (:func:`matrix`) is every combination of

* model and data: ``mlp`` (6 units) and ``smallcnn`` (9 units) on scikit-learn digits, batch 16,
  8 steps; ``resnet20`` (15 units) on synthetic data, batch 128 (8 MiB activations between
  stages), 4 steps;
* K = 2 and K = 3 stages (resnet20 split at [7] and [5, 10]);
* schedule: ``bp``, ``ddg``, ``ddg-pipelined`` (1 micro-batch), ``gpipe``, ``1f1b`` (2 micro-batches);
* with or without each of ``--checkpoint-dir D --checkpoint-every 2``, ``--metrics F``,
  ``--trace F``, and the test-set evaluation at the end (``--no-eval`` when without).

Launches go through the matrix in a deterministic shuffled order (``--seed``) that is
balanced greedily: each next configuration is the one whose model, K, schedule, options
(and model×schedule, K×schedule, model×K pairs) have been launched least so far, so
any prefix of N launches covers the matrix about evenly; past the end it starts over.
``--configs`` keeps the configurations whose label contains every comma-separated
substring (labels look like ``smallcnn/K3/1f1b/M2/noeval+ckpt+trace``).

Every launch: ``--no-progress --timeout-s 60 --backend gloo``, ``OMP_NUM_THREADS=1``, its own session
(process group), killed with its whole group after ``--launch-timeout`` seconds (a timeout
is a failure). A launch is clean only if it exits 0; its stderr contains none of
``terminate called``, ``Fatal Python error``, ``Traceback``, ``warning: stage``; the summary
line is on stdout; every requested output (metrics, trace, checkpoint manifest) exists;
and no process of its process group is still alive 10 s after it exited (leftovers are
killed so they cannot disturb the next launch).

Exit status 0 if every launch was clean, 1 otherwise (2 on bad options).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ddgsim.plan.format import Plan  # noqa: E402

UNITS = {"mlp": 6, "smallcnn": 9, "resnet20": 15}
SPLITS: dict[tuple[str, int], list[int]] = {
    ("mlp", 2): [3], ("mlp", 3): [2, 4],
    ("smallcnn", 2): [4], ("smallcnn", 3): [3, 6],
    ("resnet20", 2): [7], ("resnet20", 3): [5, 10],
}
SCHEDULES = ("bp", "ddg", "ddg-pipelined", "gpipe", "1f1b")
MICRO = {"gpipe": 2, "1f1b": 2}
CHEAP_MODELS = ("mlp", "smallcnn")
# model -> (data, batch, steps)
WORKLOAD = {"mlp": ("digits", 16, 8), "smallcnn": ("digits", 16, 8), "resnet20": ("synthetic", 128, 4)}
BAD_STDERR = ("terminate called", "Fatal Python error", "Traceback", "warning: stage")
EXPLAINS = re.compile(r"(?i:\berror\b)|Error\b|terminate|Fatal|Traceback")
RANK_PREFIX = re.compile(r"^\[(?:rank|default)\d+\]:\s?")
LAUNCH_TIMEOUT_S = 300.0
LEFTOVER_GRACE_S = 10.0


@dataclass(frozen=True)
class Config:
    """One ``ddgsim execute`` launch of the soak matrix."""

    model: str
    stages: int
    schedule: str
    checkpoint: bool = False
    metrics: bool = False
    trace: bool = False
    eval: bool = True

    @property
    def data(self) -> str:
        return WORKLOAD[self.model][0]

    @property
    def batch(self) -> int:
        return WORKLOAD[self.model][1]

    @property
    def steps(self) -> int:
        return WORKLOAD[self.model][2]

    @property
    def micro_batches(self) -> int:
        return MICRO.get(self.schedule, 1)

    @property
    def split(self) -> list[int]:
        return list(SPLITS[(self.model, self.stages)])

    @property
    def cheap(self) -> bool:
        """A small model on digits (a launch costs ~10-15 s on a 2-core machine)."""
        return self.model in CHEAP_MODELS

    @property
    def label(self) -> str:
        opts = ["eval" if self.eval else "noeval"]
        opts += [name for name, on in (("ckpt", self.checkpoint), ("metrics", self.metrics),
                                       ("trace", self.trace)) if on]
        return f"{self.model}/K{self.stages}/{self.schedule}/M{self.micro_batches}/{'+'.join(opts)}"

    def keys(self) -> tuple[tuple[str, Any], ...]:
        """The (dimension, value) pairs the balanced order spreads evenly."""
        single = (("model", self.model), ("K", self.stages), ("schedule", self.schedule),
                  ("ckpt", self.checkpoint), ("metrics", self.metrics), ("trace", self.trace),
                  ("eval", self.eval))
        pairs = (("model*schedule", (self.model, self.schedule)),
                 ("K*schedule", (self.stages, self.schedule)),
                 ("model*K", (self.model, self.stages)))
        return single + pairs


def matrix() -> list[Config]:
    """Every configuration of the soak matrix (3 models x 2 K x 5 schedules x 16 option sets)."""
    return [Config(model, k, sched, ck, me, tr, ev)
            for model, k, sched, ck, me, tr, ev in product(
                UNITS, (2, 3), SCHEDULES, (False, True), (False, True), (False, True), (True, False))]


def select(configs: list[Config], pattern: str | None) -> list[Config]:
    """The configs whose label contains every comma-separated substring of ``pattern``."""
    parts = [p for p in (pattern or "").split(",") if p]
    return [c for c in configs if all(p in c.label for p in parts)]


def ordered(configs: list[Config], seed: int = 0) -> list[Config]:
    """``configs`` in a seeded shuffled order, balanced so that every prefix covers them evenly."""
    pool = list(configs)
    random.Random(seed).shuffle(pool)
    keys = [c.keys() for c in pool]
    used: Counter[tuple[str, Any]] = Counter()
    left = list(range(len(pool)))
    out: list[Config] = []
    while left:
        # min() keeps the first of equal scores: ties go to the shuffled order
        best = min(left, key=lambda i: sum(used[k] for k in keys[i]))
        left.remove(best)
        used.update(keys[best])
        out.append(pool[best])
    return out


def write_plan(path: Path, cfg: Config) -> Path:
    """The plan file of ``cfg`` (as tests/test_executor_dist.py writes them)."""
    Plan.for_split(model=cfg.model, split=cfg.split, num_units=UNITS[cfg.model], schedule=cfg.schedule,
                   batch_size=cfg.batch, micro_batches=cfg.micro_batches).save(path)
    return path


@dataclass
class Result:
    """What one launch did; ``clean`` when ``reasons`` is empty."""

    label: str
    seconds: float
    returncode: int | None
    timed_out: bool = False
    reasons: list[str] = field(default_factory=list)
    first_line: str = ""
    """First stderr line with 'error'/'terminate'/'Fatal'/'Traceback' (else the last line)."""
    exception: str = ""
    """When ``first_line`` opens a traceback: the exception line that ends it."""
    summary: str = ""
    leftover_pids: list[int] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    stdout: str = ""
    stderr: str = ""

    @property
    def clean(self) -> bool:
        return not self.reasons

    def explain(self) -> str:
        """One line: why the launch failed and the first stderr line that says so."""
        text = "; ".join(self.reasons)
        if self.first_line:
            text += f" | stderr: {self.first_line}"
        if self.exception:
            text += f" ... {self.exception}"
        return text

    def to_json(self, with_output: bool = False) -> dict[str, Any]:
        d = asdict(self)
        d["clean"] = self.clean
        if not with_output:
            d.pop("stdout")
            d.pop("stderr")
        return d


def explaining_line(stderr: str) -> tuple[str, str]:
    """(first line that explains the failure, the exception ending the traceback it opens)."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if not lines:
        return "", ""
    for i, ln in enumerate(lines):
        if EXPLAINS.search(ln):
            exc = ""
            if "Traceback" in ln:
                m = RANK_PREFIX.match(ln)
                prefix = m.group(0) if m else ""
                for nxt in lines[i + 1:]:
                    if not nxt.startswith(prefix):
                        continue
                    body = nxt[len(prefix):]
                    if body and not body[0].isspace() and not body.startswith(("Traceback", "File ")):
                        exc = nxt.strip()
                        break
            return ln.strip(), exc
    return lines[-1].strip(), ""


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: ask the kernel whether the group has anyone in it
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    out = []
    for p in proc.iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) "
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(p.name))
    return out


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def command(cfg: Config, workdir: Path) -> list[str]:
    """The ``python -m ddgsim execute`` command line of ``cfg`` (outputs under ``workdir``)."""
    plan = write_plan(workdir / "plan.json", cfg)
    argv = [sys.executable, "-m", "ddgsim", "execute", str(plan), "--steps", str(cfg.steps),
            "--data", cfg.data, "--no-progress", "--timeout-s", "60", "--backend", "gloo"]
    if cfg.checkpoint:
        argv += ["--checkpoint-dir", str(workdir / "ck"), "--checkpoint-every", "2"]
    if cfg.metrics:
        argv += ["--metrics", str(workdir / "metrics.json")]
    if cfg.trace:
        argv += ["--trace", str(workdir / "trace.json")]
    if not cfg.eval:
        argv.append("--no-eval")
    return argv


def launch(cfg: Config, workdir: Path, timeout: float = LAUNCH_TIMEOUT_S) -> Result:
    """Run ``cfg`` once as a fresh process tree in ``workdir`` (created) and judge it."""
    workdir.mkdir(parents=True, exist_ok=True)
    argv = command(cfg, workdir)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out_path, err_path = workdir / "stdout.txt", workdir / "stderr.txt"
    timed_out = False
    t0 = time.monotonic()
    # Output to files, not pipes: a stage process that outlives the launcher would hold a pipe
    # open and make us wait for it; with files we wait for the launcher alone.
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, start_new_session=True)
        pgid = proc.pid  # a new session: the launcher leads its own process group
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(pgid)
            proc.wait()
        except BaseException:
            _kill_group(pgid)
            proc.wait()
            raise
    seconds = time.monotonic() - t0
    leftover = _group_members(pgid)
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    while leftover and time.monotonic() < deadline:
        time.sleep(0.2)
        leftover = _group_members(pgid)
    if leftover:
        _kill_group(pgid)

    stdout = out_path.read_text(errors="replace")
    stderr = err_path.read_text(errors="replace")
    res = Result(label=cfg.label, seconds=round(seconds, 2), returncode=proc.returncode,
                 timed_out=timed_out, leftover_pids=leftover, command=argv, stdout=stdout, stderr=stderr)
    if timed_out:
        res.reasons.append(f"timed out after {timeout:.0f} s")
    elif proc.returncode != 0:
        res.reasons.append(f"exit status {proc.returncode}")
    res.reasons += [f"stderr has '{s}'" for s in BAD_STDERR if s in stderr]
    head = f"{cfg.schedule} K={cfg.stages}: {cfg.steps} steps, "
    res.summary = next((ln for ln in stdout.splitlines() if ln.startswith(head)), "")
    if not res.summary:
        res.reasons.append("no summary line on stdout")
    wanted = [("metrics", cfg.metrics, workdir / "metrics.json"),
              ("trace", cfg.trace, workdir / "trace.json"),
              ("checkpoint manifest", cfg.checkpoint, workdir / "ck" / "manifest.json")]
    res.reasons += [f"no {what} file" for what, on, path in wanted if on and not path.is_file()]
    if leftover:
        res.reasons.append(f"{len(leftover)} process(es) of its group alive {LEFTOVER_GRACE_S:.0f} s "
                           "after it exited (killed)")
    if res.reasons:
        res.first_line, res.exception = explaining_line(stderr)
    return res


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", label)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="launches to make (default 20)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the launch order (default 0)")
    ap.add_argument("--configs", default=None, metavar="SUBSTR[,SUBSTR...]",
                    help="keep configs whose label contains every substring, e.g. 'mlp/K3,/gpipe/'")
    ap.add_argument("--json", default=None, metavar="FILE", help="write the results as JSON")
    ap.add_argument("--keep", default=None, metavar="DIR",
                    help="keep failing launches' plan, stdout and stderr under DIR")
    ap.add_argument("--launch-timeout", type=float, default=LAUNCH_TIMEOUT_S,
                    help=f"seconds before a launch is killed and counted failed (default {LAUNCH_TIMEOUT_S:.0f})")
    args = ap.parse_args(argv)
    if args.runs <= 0:
        ap.error(f"--runs must be > 0, got {args.runs}")
    full = matrix()
    configs = ordered(select(full, args.configs), args.seed)
    if not configs:
        ap.error(f"--configs {args.configs!r} matches none of the {len(full)} configurations")
    print(f"soak: {args.runs} launches over {len(configs)} of {len(full)} configurations "
          f"(seed {args.seed}), {os.cpu_count()} CPU cores, load {os.getloadavg()[0]:.2f}", flush=True)

    results: list[Result] = []
    width = max(len(c.label) for c in configs)
    with tempfile.TemporaryDirectory(prefix="ddgsim-soak-") as tmp:
        for i in range(args.runs):
            cfg = configs[i % len(configs)]
            workdir = Path(tmp) / f"run-{i:04d}"
            res = launch(cfg, workdir, args.launch_timeout)
            results.append(res)
            status = "clean" if res.clean else f"FAILED  {res.explain()}"
            print(f"[{i + 1:>{len(str(args.runs))}}/{args.runs}] {cfg.label:<{width}} "
                  f"{res.seconds:7.1f} s  {status}", flush=True)
            if not res.clean and args.keep:
                dest = Path(args.keep) / f"{i:04d}-{_safe(cfg.label)}"
                dest.mkdir(parents=True, exist_ok=True)
                for name in ("plan.json", "stdout.txt", "stderr.txt"):
                    if (workdir / name).is_file():
                        shutil.copy2(workdir / name, dest / name)
                (dest / "command.txt").write_text(" ".join(res.command) + "\n")
            shutil.rmtree(workdir, ignore_errors=True)

    failed = [(i, r) for i, r in enumerate(results) if not r.clean]
    secs = [r.seconds for r in results]
    n = len(results)
    print()
    print(f"clean {n - len(failed)}/{n}, failed {len(failed)}/{n}")
    print(f"launch seconds: median {statistics.median(secs):.1f}, max {max(secs):.1f} "
          f"(load {os.getloadavg()[0]:.2f})")
    for i, r in failed:
        print(f"  #{i + 1} {r.label}: {'; '.join(r.reasons)}")
        print(f"      {r.first_line or '(empty stderr)'}")
        if r.exception:
            print(f"      ... {r.exception}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "runs": n, "clean": n - len(failed), "failed": len(failed), "seed": args.seed,
            "configs": args.configs, "matrix_size": len(full), "selected": len(configs),
            "median_s": statistics.median(secs), "max_s": max(secs),
            "results": [r.to_json() for r in results],
        }, indent=2) + "\n")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
