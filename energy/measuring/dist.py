"""torch.distributed for corpus runs: set up from ``torchrun``'s environment, move bytes between ranks.

One process per rank, started by ``torchrun`` (or ``spike-energy profile --workers N``, which
starts ``torchrun`` locally). gloo on CPU, nccl on CUDA. The merged state is exchanged as
bytes (an ``.npz`` image, never a pickle) with ``all_gather`` and ``broadcast``.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

from spikegpt.errors import SpikeEnergyError

logger = logging.getLogger(__name__)

# A fast rank waits for a slow one at checkpoints and at the end: allow long documents.
TIMEOUT = timedelta(hours=24)


@dataclass
class Dist:
    """This process's place in the run: ``rank`` of ``world``; ``device`` for collectives."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: str = "cpu"
    progress_group: object = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, index: int) -> bool:
        """Documents go to ranks round-robin by their corpus index: deterministic, shards may be uneven."""
        return index % self.world == self.rank

    # ------------------------------------------------------------------ collectives
    def gather_bytes(self, data: bytes) -> list[bytes]:
        """Every rank's ``data``, in rank order, on every rank (``all_gather``)."""
        if not self.active:
            return [data]
        size = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        sizes = [torch.zeros_like(size) for _ in range(self.world)]
        dist.all_gather(sizes, size)
        n = max(int(s) for s in sizes)
        buf = torch.zeros(n, dtype=torch.uint8)
        buf[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else buf[:0]
        buf = buf.to(self.device)
        bufs = [torch.zeros(n, dtype=torch.uint8, device=self.device) for _ in range(self.world)]
        dist.all_gather(bufs, buf)
        return [bytes(b[: int(s)].cpu().numpy().tobytes()) for b, s in zip(bufs, sizes)]

    def broadcast_bytes(self, data: bytes | None) -> bytes:
        """Rank 0's ``data`` on every rank."""
        if not self.active:
            return data or b""
        size = torch.tensor([len(data or b"")], dtype=torch.int64, device=self.device)
        dist.broadcast(size, 0)
        buf = torch.zeros(int(size), dtype=torch.uint8)
        if self.rank == 0 and data:
            buf[:] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        buf = buf.to(self.device)
        dist.broadcast(buf, 0)
        return bytes(buf.cpu().numpy().tobytes())

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


def from_env(device: str) -> Dist:
    """The process group ``torchrun`` asked for (WORLD_SIZE > 1), or a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Dist(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if cuda:
        if not torch.cuda.is_available():
            raise SpikeEnergyError("--device cuda was asked for but no CUDA device is available; use --device cpu")
        device = f"cuda:{local_rank % torch.cuda.device_count()}"
        torch.cuda.set_device(device)
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=TIMEOUT)
    # progress runs in a background thread: its own (gloo, CPU) group keeps it apart from the main collectives
    group = dist.new_group(backend="gloo", timeout=TIMEOUT)
    logger.info("rank %d of %d (%s, %s)", rank, world, backend, device)
    return Dist(rank, world, local_rank, backend, device, group)


class ProgressSync:
    """Tokens done, summed over ranks once a second by a background thread (rank 0 reports them).

    Each rank's thread calls the same all_reduce until every rank has finished, so the
    calls match; ``stop()`` marks this rank finished and waits for the others.
    """

    def __init__(self, d: Dist, report, interval_s: float = 1.0, bytes_mode: bool = False):
        self.d, self.report, self.interval = d, report, interval_s
        self.bytes_mode = bytes_mode  # done and total are the corpus bytes each rank read (all ranks read it all)
        self.done = 0
        self.total = 0
        self.tokens = 0
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="spike-energy-progress", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            t = torch.tensor([self.done, self.total, int(self._finished.is_set()), self.tokens], dtype=torch.float64)
            try:
                dist.all_reduce(t, group=self.d.progress_group)
            except Exception:  # the run is going down (a rank failed or was interrupted): stop reporting
                logger.debug("progress sync stopped", exc_info=True)
                return
            if self.d.is_main and self.report is not None:
                if self.bytes_mode:  # the mean position of the ranks in the corpus; tokens summed over them
                    self.report(int(t[0] / self.d.world), int(t[1] / self.d.world) or None, unit="bytes",
                                tokens=int(t[3]))  # fmt: skip
                else:
                    self.report(int(t[0]), int(t[1] / self.d.world) or None)
            if int(t[2]) == self.d.world:
                return
            self._finished.wait(self.interval)

    def stop(self, wait: bool = True) -> None:
        self._finished.set()
        if wait:
            self._thread.join()
