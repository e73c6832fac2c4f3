"""Point-to-point messages between neighbouring stages: receives posted early, sends asynchronous.

Each direction of each boundary carries its messages in the order the receiver
consumes them (activations in ``F`` order, error gradients in ``B`` order — the same
order on both sides for every schedule), on **its own two-rank process group**: the
activations from a replica of stage k to one of stage k+1 on one group, the error
gradients back on another (:func:`ddgsim.execute.nccl_replay.act_group`, ``grad_group``).
NCCL ignores tags and runs the operations of one communicator in issue order on one
stream: with one group per direction, a receive posted early waits only for the one
sender that will send exactly that message next, never in front of a send of ours
(``shared/NCCL.md``; :mod:`ddgsim.execute.nccl_replay` replays every schedule under
these rules). Gloo gets the same groups; the tags (31-bit, ``2·(t·M + m)``) are kept
as a check there.

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
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ddgsim.execute.nccl_replay import SEND_QUEUE, Recorder, SendLog
from ddgsim.schedule import RECEIVE_WINDOW

Key = tuple[int, int]

WINDOW = RECEIVE_WINDOW
"""Receives a mailbox keeps posted ahead of the one it waits for (the memory model counts them)."""


@dataclass(frozen=True)
class Link:
    """One direction of a link between two ranks: its two-rank process group and the group's name."""

    name: str
    group: Any


def group_timeout(timeout_s: float, backend: str, micro_batches: int) -> timedelta:
    """The timeout of the groups that carry the messages.

    Gloo: ``--timeout-s``, which then bounds each wait (a peer that sends nothing is named
    after that long). NCCL's watchdog aborts the job when an operation is *outstanding*
    longer than its group's timeout, and a receive is posted up to :data:`WINDOW` messages
    before it is needed: it may legitimately wait through every action between, each bounded
    by ``--timeout-s`` (at most 3M + 1 actions per iteration, plus the wait itself). The
    host-side waits stay bounded by ``--timeout-s``, so a hang is still named that soon.
    """
    if backend != "nccl":
        return timedelta(seconds=timeout_s)
    return timedelta(seconds=timeout_s * (WINDOW + 1) * (3 * micro_batches + 2))


def data_tag(t: int, m: int, micro_batches: int) -> int:
    return 2 * (t * micro_batches + m)


class PeerError(RuntimeError):
    """A message from a neighbour stage did not arrive: it timed out or the peer went away."""


class Mailbox:
    """Receives from one peer, in consumption order, with up to ``window`` receives posted."""

    def __init__(self, peer: int, keys: Iterable[Key], shape_of: Callable[[Key], tuple[int, ...]],
                 tag_of: Callable[[Key], int], *, device: torch.device, timeout_s: float,
                 window: int = WINDOW, ready: dict[Key, Tensor] | None = None,
                 dtype: torch.dtype = torch.float32, name: str = "", group: Link | None = None,
                 recorder: Recorder | None = None) -> None:
        self.peer, self.shape_of, self.tag_of = peer, shape_of, tag_of
        self.group = group
        """The two-rank group of this direction of the link (None: the default group)."""
        self.recorder = recorder
        self.name = name or f"stage {peer}"
        """The sender as error messages name it."""
        self.device, self.window, self.dtype = device, window, dtype
        self.timeout = timedelta(seconds=timeout_s)
        self.ready: dict[Key, Tensor] = dict(ready or {})
        self.queue: deque[Key] = deque(k for k in keys if k not in self.ready)
        self.posted: OrderedDict[Key, tuple[Tensor, dist.Work, int]] = OrderedDict()
        self.wait_s = 0.0
        self.post_s = 0.0
        self._fill()

    def _fill(self) -> None:
        t0 = time.perf_counter()
        while len(self.posted) < self.window and self.queue:
            key = self.queue.popleft()
            buf = torch.empty(self.shape_of(key), dtype=self.dtype, device=self.device)
            work = dist.irecv(buf, src=self.peer, tag=self.tag_of(key),
                              group=self.group.group if self.group is not None else None)
            assert work is not None
            oid = self.recorder.post("recv", self.group.name, self.peer, key) \
                if self.recorder is not None and self.group is not None else -1
            self.posted[key] = (buf, work, oid)
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
        key, (buf, work, oid) = next(iter(self.posted.items()))
        t0 = time.perf_counter()
        if self.recorder is not None and oid >= 0:
            self.recorder.wait(oid)
        try:
            # Blocks this thread until this receive is done (NCCL: and orders the current stream
            # after it); nothing else posted on the device is waited for.
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
             ready: dict[Key, Tensor] | None = None, groups: Callable[[int], Link | None] = lambda _p: None,
             recorder: Recorder | None = None) -> Pieces:
        """``sources``: (peer rank, lo, hi, name) per piece; ``ready``: whole messages already here
        (from a checkpoint), cut into the pieces; ``groups``: the group of the link from a peer."""
        ready = ready or {}

        def rows(n: int) -> Callable[[Key], tuple[int, ...]]:
            return lambda _key: (n, *feats)

        return cls([(Mailbox(peer, keys, rows(hi - lo), tag_of, device=device, timeout_s=timeout_s,
                             ready={k: v[lo:hi] for k, v in ready.items()}, name=name, group=groups(peer),
                             recorder=recorder),
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

    def __init__(self, timeout_s: float, max_pending: int = SEND_QUEUE, name: str = "completer",
                 device: torch.device | None = None) -> None:
        self.timeout = timedelta(seconds=timeout_s)
        self.device = device
        self.queue: queue.Queue[tuple[dist.Work, Any, Callable[[], None]] | None] = queue.Queue(max_pending)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            # On its own stream: NCCL's wait() orders the *current* stream after the send, and the
            # current stream of a thread is the device's default one, the compute's, unless set.
            with torch.cuda.stream(torch.cuda.Stream(self.device)):  # type: ignore[no-untyped-call]
                self._wait_all()
        else:
            self._wait_all()

    def _wait_all(self) -> None:
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

    def __init__(self, timeout_s: float, max_pending: int = SEND_QUEUE, device: torch.device | None = None,
                 recorder: Recorder | None = None) -> None:
        self.timeout_s = timeout_s
        self.completer = Completer(timeout_s, max_pending, name="sends", device=device)
        self.log = SendLog(recorder, max_pending) if recorder is not None else None
        self.done: list[tuple[float, float, str, int, int]] = []
        """(posted, completed, name, nbytes, destination rank) per send, perf_counter seconds."""
        self.post_s = 0.0
        self.wait_s = 0.0

    def send(self, tensor: Tensor, dst: int, tag: int, name: str, group: Link | None = None,
             key: Key | None = None) -> None:
        t0 = time.perf_counter()
        tensor = tensor.contiguous()
        work = dist.isend(tensor, dst=dst, tag=tag, group=group.group if group is not None else None)
        assert work is not None
        if self.log is not None and group is not None:
            self.log.post(group.name, dst, key)
        nbytes = tensor.numel() * tensor.element_size()

        def done() -> None:
            self.done.append((t0, time.perf_counter(), name, nbytes, dst))

        self.completer.submit(work, tensor, done)
        self.post_s += time.perf_counter() - t0

    def flush(self) -> None:
        t0 = time.perf_counter()
        if self.log is not None:
            self.log.flush()
        self.completer.drain()
        self.wait_s += time.perf_counter() - t0

    def close(self) -> bool:
        """Join the completer; ``True`` when no thread is left inside a c10d call."""
        return self.completer.close(self.timeout_s + 5.0)
