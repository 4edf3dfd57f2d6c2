"""The pipeline's :class:`~interp.streaming.Stream`: ranks of ``torchrun`` and a running-state
checkpoint per rank, for the streaming instruments (examples, dissection).

Under ``torchrun`` the items are strided over the ranks and :meth:`RankStream.gather`
all-gathers the partial states (the instrument merges them exactly); in one process it is one
shard. With a ``folder`` the running state is saved atomically in
``folder/JOB.rankRofW.pt`` (see :class:`interp.distributed.RankCheckpoint`: weights-only, keyed
by the instrument's settings and the number of ranks) every ``every`` seconds and between
passes, and an interrupted run resumes from it. When the instrument finishes, the file is
removed, or, with ``keep_finished``, replaced by the finished state, which the caller removes
once it has stored the result elsewhere (the hierarchy does after writing a network's stage).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import distributed as dist
from ..streaming import State, Stream
from ..utils import prepare_output

__all__ = ["RankStream"]


class RankStream(Stream):
    """Ranks of the active process group (one shard without one) and, with ``folder``, a
    resumable checkpoint of this rank's running state named after ``job``."""

    def __init__(
        self,
        folder: str | Path | None = None,
        job: str = "stream",
        *,
        every: float | None = None,
        keep_finished: bool = False,
    ) -> None:
        self.index, self.shards = dist.rank(), dist.world()
        self.keep_finished = keep_finished
        self.checkpoint = None
        if folder is not None:
            prepare_output(folder)  # writable; no temp files of a killed run
            self.checkpoint = dist.RankCheckpoint(folder, job, every)

    @property
    def path(self) -> Path | None:
        """This rank's checkpoint file (``None`` without a folder)."""
        return None if self.checkpoint is None else self.checkpoint.path

    def gather(self, obj: Any) -> list[Any]:
        return dist.all_gather(obj)

    def resume(self, key: dict[str, Any]) -> dict[str, Any]:
        return {} if self.checkpoint is None else self.checkpoint.load(key)

    def save(self, state: State, *, now: bool = False) -> None:
        if self.checkpoint is None:
            return
        if now:
            self.checkpoint.save(state())
        else:
            self.checkpoint.maybe_save(state)

    def finish(self, state: State) -> None:
        if self.checkpoint is None:
            return
        if self.keep_finished:
            self.checkpoint.save(state())
        else:
            self.checkpoint.remove()
