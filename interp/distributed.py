"""Sharding over ``torch.distributed`` ranks (``torchrun``): the atlas, examples and dissection.

When a job runs under ``torchrun`` (``WORLD_SIZE > 1``), :func:`setup` joins the process
group (``nccl`` on CUDA, each rank on GPU ``LOCAL_RANK``; ``gloo`` on CPU) and the work is
split by rank:

* ``atlas`` / ``visualize``: units. The unfinished units are cut into render batches as one
  process would cut them and the batches are dealt to the ranks in turn; a unit renders from
  its own seed in the same batch as alone, so the images are the same. Ranks record their
  units in ``units.rankRofW.json``; rank 0 merges them into ``units.json`` and writes grids,
  ``index.json`` and ``overview.png``.
* ``examples`` and ``hierarchy`` (dissection): the dataset, strided (rank ``r`` of ``w``
  takes items ``r, r + w, ...``; the jobs hand the instruments a
  :class:`~interp.pipeline.sharding.RankStream`, the instruments never import this module),
  with an exact merge: top-k lists by value with ties broken
  by item index (what one process keeps), quantile buffers by their union's top values,
  counts by summing. Every rank ends with the merged result; rank 0 writes the outputs.

* ``report``: its atlas, examples and hierarchy stages split as above; the inventory, the
  unit cards and the page are made by rank 0.

Interrupted runs resume with any number of ranks: the atlas from the unit records,
``examples`` from each rank's checkpoint (same number of ranks), ``hierarchy`` from its
finished network stages.

    interp atlas efficientnet_lite0 --per-layer all --steps 256 --size 128   # one GPU (or CPU)
    torchrun --standalone --nproc_per_node=8 -m interp atlas efficientnet_lite0 \
        --per-layer all --steps 256 --size 128                               # 8 GPUs, one node
    torchrun --standalone --nproc_per_node=8 -m interp examples efficientnet_lite0 \
        --data photos --images 5000
    torchrun --nnodes=2 --node_rank=R --master_addr=HOST --master_port=29500 \
        --nproc_per_node=8 -m interp hierarchy efficientnet_lite0 --data broden:/data/broden
                                               # 2 nodes: run on each node with R = 0 and 1

The edge probe and the controls' BatchNorm re-estimation in ``hierarchy`` are small and run on
every rank. Under torchrun write ``--images`` rather than ``--n``: torchrun's own ``--n*``
options would take ``--n``. Multi-node runs need the output folder on a filesystem every node
sees (ranks read each other's records and stage files).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .errors import RangeError
from .streaming import object_state, restore_object
from .utils import atomic_path, settings_digest

__all__ = [
    "RankCheckpoint",
    "all_gather",
    "all_sum",
    "barrier",
    "checkpoint_interval",
    "group_rank",
    "group_world",
    "is_distributed",
    "is_main",
    "local",
    "object_state",
    "rank",
    "restore_object",
    "setup",
    "shard",
    "teardown",
    "world",
]


_LOCAL = threading.local()


def is_distributed() -> bool:
    """Whether a process group with more than one rank is active (and this thread is not
    inside :func:`local`)."""
    if getattr(_LOCAL, "depth", 0):
        return False
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@contextlib.contextmanager
def local() -> Iterator[None]:
    """Inside, this rank works alone: one shard, its own writes, no barrier or collective.

    For work items dealt to ranks whole (a study's networks): each rank runs its own items
    with the single-process code path, and the ranks meet again after the block. The
    process group's rank stays available as :func:`group_rank`."""
    _LOCAL.depth = getattr(_LOCAL, "depth", 0) + 1
    try:
        yield
    finally:
        _LOCAL.depth -= 1


def group_rank() -> int:
    """This process's rank in the process group, also inside :func:`local` (0 without one)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def group_world() -> int:
    """The process group's size, also inside :func:`local` (1 without one)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0 (or a single process): the one that writes outputs."""
    return rank() == 0


def setup(device: str = "auto") -> bool:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE > 1``); on CUDA each
    rank takes GPU ``LOCAL_RANK``. Returns whether the job is distributed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        cuda = torch.cuda.is_available() and device != "cpu"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return is_distributed()


def teardown(ok: bool = True) -> None:
    """Leave the process group before the process exits (nothing when none was joined).

    After a job that finished (``ok``) the ranks meet at a barrier, so none closes its
    connections while another still finishes a collective, and then destroy the group:
    exiting with a gloo group still open can abort a rank at interpreter shutdown
    ("terminate called without an active exception", pytorch/pytorch#190489). After an
    error the group is left alone: the other ranks may be inside a collective, where
    destroying it can hang (nccl), and torchrun stops them anyway."""
    if not (ok and dist.is_available() and dist.is_initialized()):
        return
    barrier()
    dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (nothing in a single process)."""
    if is_distributed():
        dist.barrier()


def shard(n: int) -> list[int]:
    """This rank's item indices of ``range(n)`` (all of them in a single process)."""
    return list(range(rank(), n, world()))


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (pickled; CPU tensors travel fine), in rank order."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over ranks (a new tensor; ``t`` itself in a single process)."""
    if not is_distributed():
        return t
    parts = all_gather(t.detach().cpu())
    return torch.stack(parts).sum(dim=0).to(t.device)


def checkpoint_interval(default: float = 60.0) -> float:
    """Seconds between the running-state saves of streaming jobs (``examples``, the
    dissection of ``hierarchy``): ``INTERP_CHECKPOINT_EVERY`` when set (``0``: after every
    batch), else ``default``."""
    text = os.environ.get("INTERP_CHECKPOINT_EVERY", "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise RangeError(
            f"INTERP_CHECKPOINT_EVERY={text!r}: give seconds between checkpoints (0 or more)"
        )
    return value


class RankCheckpoint:
    """This rank's running state of a streaming job in ``folder/JOB.rankRofW.pt``.

    Written atomically (at most every ``every`` seconds with :meth:`maybe_save`; default
    :func:`checkpoint_interval`), made of tensors and plain values so it loads with
    ``weights_only=True``; :meth:`load` returns
    ``{}`` when there is none, when it is damaged, or when it was made under another ``key``
    (other settings) or another number of ranks (the file name differs).
    """

    def __init__(self, folder: str | Path, job: str, every: float | None = None) -> None:
        self.path = Path(folder) / f"{job}.rank{rank()}of{world()}.pt"
        every = checkpoint_interval() if every is None else every
        self.every, self.last, self.digest = float(every), time.monotonic(), ""

    def load(self, key: dict[str, Any]) -> dict[str, Any]:
        self.digest = settings_digest(key, 16)
        if not self.path.is_file():
            return {}
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged checkpoint only costs the redo
            return {}
        return saved if saved.get("digest") == self.digest else {}

    def save(self, doc: dict[str, Any]) -> None:
        # through a file object: a full disk then raises OSError (ENOSPC), which atomic_path
        # turns into a clear OutputError (torch.save to a path raises a bare RuntimeError)
        with atomic_path(self.path, suffix=".pt") as tmp, open(tmp, "wb") as handle:
            torch.save({**doc, "digest": self.digest}, handle)
        self.last = time.monotonic()

    def maybe_save(self, make: Any) -> None:
        """Save ``make()`` when ``every`` seconds have passed since the last save."""
        if time.monotonic() - self.last >= self.every:
            self.save(make())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
