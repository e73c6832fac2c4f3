"""Point-to-point messages between neighbouring stages: receives posted early, sends asynchronous.

Each direction of each boundary carries its messages in the order the receiver
consumes them (activations in ``F`` order, error gradients in ``B`` order — the same
order on both sides for every schedule), each with its own tag, so a receive can be
posted long before it is needed and overlap with compute. Gloo tags are 31-bit:
activations and gradients use ``2·(t·M + m)`` (they come from different peers).

**Replicated stages** (``ddgsim.replicas``): a message between stages is cut into
``pieces`` — the samples one replica of the sender holds and one replica of the
receiver needs. Each piece has its own sender and receiver rank, so a piece is
told apart by its source rank with the same tag; a receiver keeps one
:class:`Mailbox` per piece (per source replica) and :class:`Pieces` concatenates a
message's pieces in sample order. With one replica per stage there is one piece,
the whole message, handed over as received (no copy).

**Teardown.** Nothing here may still be inside a c10d call when the process group is
destroyed or the interpreter exits: every receive a :class:`Mailbox` posts is one its
owner will consume (``pending()`` is empty at the end of a successful run), and the
one helper thread, the :class:`Outbox`'s completer, is joined by :meth:`Outbox.close`
— on success after every send completed, after a failure once its current wait ends
(each wait is bounded by the run's timeout; a lost peer ends it at once).
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


class PeerError(RuntimeError):
    """A message from a neighbour stage did not arrive: it timed out or the peer went away."""


class Mailbox:
    """Receives from one peer, in consumption order, with up to ``window`` receives posted."""

    def __init__(self, peer: int, keys: Iterable[Key], shape_of: Callable[[Key], tuple[int, ...]],
                 tag_of: Callable[[Key], int], *, device: torch.device, timeout_s: float,
                 window: int = 2, ready: dict[Key, Tensor] | None = None,
                 dtype: torch.dtype = torch.float32, name: str = "") -> None:
        self.peer, self.shape_of, self.tag_of = peer, shape_of, tag_of
        self.name = name or f"stage {peer}"
        """The sender as error messages name it."""
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
        try:
            work.wait(self.timeout)
        except RuntimeError as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            if "timed out" in first.lower() or "timeout" in first.lower():
                raise PeerError(f"{self.name} sent nothing for {self.timeout.total_seconds():g} s "
                                f"(waiting for its message of batch {key[0]}); it hangs or is too slow "
                                "(raise --timeout-s)") from None
            raise PeerError(f"lost contact with {self.name} while waiting for its message of batch "
                            f"{key[0]} ({first[:200]})") from None
        self.wait_s += time.perf_counter() - t0
        del self.posted[key]
        self.ready[key] = buf
        self._fill()

    def get(self, key: Key) -> Tensor:
        self.wait(key)
        return self.ready.pop(key)

    def pending(self) -> list[Key]:
        """Receives posted or still to post: empty once every expected message was consumed."""
        return [*self.posted, *self.queue]


class Pieces:
    """One kind of message (activations or error gradients) from the replicas of a neighbour stage:
    a :class:`Mailbox` per piece, each holding rows ``[lo, hi)`` of this replica's shard; a message
    is its pieces concatenated in sample order."""

    def __init__(self, boxes: list[tuple[Mailbox, int, int]]) -> None:
        self.boxes = sorted(boxes, key=lambda b: b[1])

    @classmethod
    def open(cls, sources: list[tuple[int, int, int, str]], keys: list[Key], feats: tuple[int, ...],
             tag_of: Callable[[Key], int], *, device: torch.device, timeout_s: float,
             ready: dict[Key, Tensor] | None = None) -> Pieces:
        """``sources``: (peer rank, lo, hi, name) per piece; ``ready``: whole messages already here
        (from a checkpoint), cut into the pieces."""
        ready = ready or {}

        def rows(n: int) -> Callable[[Key], tuple[int, ...]]:
            return lambda _key: (n, *feats)

        return cls([(Mailbox(peer, keys, rows(hi - lo), tag_of, device=device, timeout_s=timeout_s,
                             ready={k: v[lo:hi] for k, v in ready.items()}, name=name),
                     lo, hi) for peer, lo, hi, name in sources])

    def wait(self, key: Key) -> None:
        for box, _, _ in self.boxes:
            box.wait(key)

    def held(self, key: Key) -> Tensor:
        """The whole message ``key`` (waited for), leaving it available for :meth:`get`."""
        self.wait(key)
        parts = [box.ready[key] for box, _, _ in self.boxes]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def get(self, key: Key) -> Tensor:
        whole = self.held(key)
        for box, _, _ in self.boxes:
            box.ready.pop(key)
        return whole

    def pending(self) -> list[tuple[int, Key]]:
        """(peer, key) of every receive posted or still to post."""
        return [(box.peer, k) for box, _, _ in self.boxes for k in box.pending()]

    @property
    def wait_s(self) -> float:
        return sum(box.wait_s for box, _, _ in self.boxes)

    @property
    def post_s(self) -> float:
        return sum(box.post_s for box, _, _ in self.boxes)


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
            first = (str(self.error).strip().splitlines() or [""])[0][:200]
            raise PeerError(f"a send to a neighbour stage failed ({type(self.error).__name__}: {first})")

    def drain(self) -> None:
        """Block until every submitted handle completed (each wait is bounded by the timeout)."""
        self.queue.join()
        self.check()

    def close(self, timeout_s: float) -> bool:
        """Stop the thread after the handles already submitted; ``False`` if it is still inside a
        wait after ``timeout_s`` (only possible after a failure: a peer that stopped receiving)."""
        try:
            self.queue.put(None, timeout=timeout_s)
        except queue.Full:
            return False
        self.thread.join(timeout=timeout_s)
        return not self.thread.is_alive()


class Outbox:
    """Asynchronous sends; each tensor stays referenced until its send completed."""

    def __init__(self, timeout_s: float, max_pending: int = 8) -> None:
        self.timeout_s = timeout_s
        self.completer = Completer(timeout_s, max_pending, name="sends")
        self.done: list[tuple[float, float, str, int, int]] = []
        """(posted, completed, name, nbytes, destination rank) per send, perf_counter seconds."""
        self.post_s = 0.0
        self.wait_s = 0.0

    def send(self, tensor: Tensor, dst: int, tag: int, name: str) -> None:
        t0 = time.perf_counter()
        tensor = tensor.contiguous()
        work = dist.isend(tensor, dst=dst, tag=tag)
        assert work is not None
        nbytes = tensor.numel() * tensor.element_size()

        def done() -> None:
            self.done.append((t0, time.perf_counter(), name, nbytes, dst))

        self.completer.submit(work, tensor, done)
        self.post_s += time.perf_counter() - t0

    def flush(self) -> None:
        t0 = time.perf_counter()
        self.completer.drain()
        self.wait_s += time.perf_counter() - t0

    def close(self) -> bool:
        """Join the completer; ``True`` when no thread is left inside a c10d call."""
        return self.completer.close(self.timeout_s + 5.0)
