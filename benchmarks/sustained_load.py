"""Does the VM slow under sustained load? N processes train resnet20 at batch 128 (one torch thread
each, glibc malloc untuned, so steps are slower than a profile's) for S seconds; each prints its
median step per 10 s window.

    python benchmarks/sustained_load.py 200 1; sleep 45; python benchmarks/sustained_load.py 200 2

Results: benchmarks/results/validation-k3/sustained/ (2026-12-05): no trend over 200 s.
"""
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def work(rank: int, seconds: float, q: "mp.Queue[tuple[int, list[float]]]") -> None:
    import torch

    from ddgsim.models.registry import build_model, get_spec
    torch.set_num_threads(1)
    spec = get_spec("resnet20")
    net = build_model(spec).train()
    x = spec.io.example_input(128, torch.Generator().manual_seed(rank))
    opt = torch.optim.SGD(net.parameters(), lr=0.0, momentum=0.9)
    t_end = time.time() + seconds
    win: list[float] = []
    w0 = time.time()
    out = []
    while time.time() < t_end:
        t = time.perf_counter()
        net(x).sum().backward()
        opt.step()
        opt.zero_grad()
        win.append(time.perf_counter() - t)
        if time.time() - w0 > 10:
            out.append(round(1e3 * statistics.median(win), 1))
            win, w0 = [], time.time()
    q.put((rank, out))

if __name__ == "__main__":
    secs, procs = float(sys.argv[1]), int(sys.argv[2])
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    ps = [ctx.Process(target=work, args=(r, secs, q)) for r in range(procs)]
    for p in ps:
        p.start()
    res = dict(q.get() for _ in ps)
    for p in ps:
        p.join()
    for r in sorted(res):
        print(f"rank {r}:", " ".join(map(str, res[r])), flush=True)
