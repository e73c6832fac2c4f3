"""``python -m ddgsim.execute PLAN --steps N ...``: one stage process; start K of them with torchrun.

Single node, K stages (CPU, gloo)::

    torchrun --nproc-per-node K -m ddgsim.execute plan.json --steps 100 --data digits

Two nodes (run on each, R = 0 and 1; the plan's stages are spread rank by rank)::

    torchrun --nnodes 2 --nproc-per-node K/2 --node-rank R \
        --rdzv-backend c10d --rdzv-endpoint HOST:PORT -m ddgsim.execute plan.json --steps 100

``python -m ddgsim execute plan.json --steps 100`` does the single-node launch itself.
"""

import sys

from ddgsim.malloc import reexec_with_hugepages

reexec_with_hugepages("ddgsim.execute")  # before torch is imported: glibc reads tunables at start

from ddgsim.execute.childlog import keep_stderr  # noqa: E402

keep_stderr()  # a copy of this process's stderr for the launcher to explain a failure

from torch.distributed.elastic.multiprocessing.errors import record  # noqa: E402

from ddgsim.execute.runner import main  # noqa: E402

sys.exit(record(main)())
