"""Point-to-point messages between neighbouring stages: receives posted early, sends asynchronous.

Each direction of each boundary carries its messages in the order the receiver
consumes them (activations in ``F`` order, error gradients in ``B`` order — the same
order on both sides for every schedule), each with its own tag, so a receive can be
posted long before it is needed and overlap with compute. Gloo tags are 31-bit:
activations and gradients use ``2·(t·M + m)`` (they come from different peers), the
loss reports of the last stage to stage 0 use ``2·t + 1``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

Key = tuple[int, int]


def data_tag(t: int, m: int, micro_batches: int) -> int:
    return 2 * (t * micro_batches + m)


def loss_tag(t: int) -> int:
    return 2 * t + 1


class Mailbox:
    """Receives from one peer, in consumption order, with up to ``window`` receives posted."""

    def __init__(self, peer: int, keys: Iterable[Key], shape_of: Callable[[Key], tuple[int, ...]],
                 tag_of: Callable[[Key], int], *, device: torch.device, timeout_s: float,
                 window: int = 2, ready: dict[Key, Tensor] | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        self.peer, self.shape_of, self.tag_of = peer, shape_of, tag_of
        self.device, self.window, self.dtype = device, window, dtype
        self.timeout = timedelta(seconds=timeout_s)
        self.ready: dict[Key, Tensor] = dict(ready or {})
        self.queue: deque[Key] = deque(k for k in keys if k not in self.ready)
        self.posted: OrderedDict[Key, tuple[Tensor, dist.Work]] = OrderedDict()
        self.wait_s = 0.0
        self.post_s = 0.0
        self._fill()

    def _fill(self) -> None:
        t0 = time.perf_counter()
        while len(self.posted) < self.window and self.queue:
            key = self.queue.popleft()
            buf = torch.empty(self.shape_of(key), dtype=self.dtype, device=self.device)
            work = dist.irecv(buf, src=self.peer, tag=self.tag_of(key))
            assert work is not None
            self.posted[key] = (buf, work)
        self.post_s += time.perf_counter() - t0

    def wait(self, key: Key) -> None:
        """Block until the message ``key`` is here (it stays available for :meth:`get`)."""
        if key in self.ready:
            return
        while key not in self.posted:
            if not self.queue and not self.posted:
                raise RuntimeError(f"message {key} from rank {self.peer} is not expected")
            self._drain_first()
        while key in self.posted:
            self._drain_first()

    def _drain_first(self) -> None:
        if not self.posted:
            self._fill()
        key, (buf, work) = next(iter(self.posted.items()))
        t0 = time.perf_counter()
        work.wait(self.timeout)
        self.wait_s += time.perf_counter() - t0
        del self.posted[key]
        self.ready[key] = buf
        self._fill()

    def get(self, key: Key) -> Tensor:
        self.wait(key)
        return self.ready.pop(key)


class Completer:
    """A thread that waits on c10d ``Work`` handles in FIFO order and runs a callback for each.

    Gloo's point-to-point ``Work.is_completed()`` only turns true once someone has called
    ``wait()``, so completion cannot be polled from the main loop; ``wait()`` releases the
    GIL, so a helper thread can block on it while the stage computes. At most
    ``max_pending`` handles are outstanding: ``submit`` blocks beyond that (backpressure,
    counted as communication time by the caller).
    """

    def __init__(self, timeout_s: float, max_pending: int = 8, name: str = "completer") -> None:
        self.timeout = timedelta(seconds=timeout_s)
        self.queue: queue.Queue[tuple[dist.Work, Any, Callable[[], None]] | None] = queue.Queue(max_pending)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if item is None:
                    return
                work, _keep_alive, done = item
                if self.error is None:
                    try:
                        work.wait(self.timeout)
                        done()
                    except BaseException as exc:  # reported to the main thread by check()
                        self.error = exc
            finally:
                self.queue.task_done()

    def submit(self, work: dist.Work, keep_alive: Any, done: Callable[[], None]) -> None:
        self.check()
        self.queue.put((work, keep_alive, done))

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def drain(self) -> None:
        """Block until every submitted handle completed (each wait is bounded by the timeout)."""
        self.queue.join()
        self.check()

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=5)


class Outbox:
    """Asynchronous sends; each tensor stays referenced until its send completed."""

    def __init__(self, timeout_s: float, max_pending: int = 8) -> None:
        self.completer = Completer(timeout_s, max_pending, name="sends")
        self.done: list[tuple[float, float, str, int]] = []
        """(posted, completed, name, nbytes) per send, perf_counter seconds."""
        self.post_s = 0.0
        self.wait_s = 0.0

    def send(self, tensor: Tensor, dst: int, tag: int, name: str) -> None:
        t0 = time.perf_counter()
        tensor = tensor.contiguous()
        work = dist.isend(tensor, dst=dst, tag=tag)
        assert work is not None
        nbytes = tensor.numel() * tensor.element_size()

        def done() -> None:
            self.done.append((t0, time.perf_counter(), name, nbytes))

        self.completer.submit(work, tensor, done)
        self.post_s += time.perf_counter() - t0

    def flush(self) -> None:
        t0 = time.perf_counter()
        self.completer.drain()
        self.wait_s += time.perf_counter() - t0

    def close(self) -> None:
        self.completer.close()


class LossReceiver:
    """Stage 0's receives of the last stage's per-batch losses (progress bar), never blocking."""

    def __init__(self, peer: int, iterations: Iterable[int], *, device: torch.device, timeout_s: float,
                 window: int = 4) -> None:
        self.peer, self.device, self.window = peer, device, window
        self.all = list(iterations)
        self.todo: deque[int] = deque(self.all)
        self.losses: dict[int, float] = {}
        self.posted = 0
        self.completer = Completer(timeout_s, window + 1, name="losses")
        self.pump()

    def pump(self) -> None:
        """Post receives until ``window`` are outstanding."""
        self.completer.check()
        while self.todo and self.posted - len(self.losses) < self.window:
            t = self.todo.popleft()
            buf = torch.empty(1, device=self.device)
            work = dist.irecv(buf, src=self.peer, tag=loss_tag(t))
            assert work is not None

            def done(t: int = t, buf: Tensor = buf) -> None:
                self.losses[t] = float(buf.item())

            self.completer.submit(work, buf, done)
            self.posted += 1

    def wait_until(self, t_end: int) -> None:
        """Block until every loss of iterations < ``t_end`` arrived."""
        while True:
            self.pump()
            if all(t in self.losses for t in self.all if t < t_end):
                return
            time.sleep(0.0005)  # the completer thread's waits are bounded by the timeout

    def close(self) -> None:
        self.completer.close()
