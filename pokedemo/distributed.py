"""Data-parallel training under ``torchrun``: PyTorch's own ``torch.distributed`` + ``DistributedDataParallel``.

``torchrun --nproc_per_node N -m pokedemo train ...`` starts N copies of the CLI with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous address in their environment. ``from_env()`` sees them and
``process_group()`` joins the group (NCCL on CUDA, gloo on CPU; one GPU per ``LOCAL_RANK``). The training
engine (``pokedemo.train``) stays one loop; it asks a ``Parallel`` object at a few named points:

- ``even_batches``/``shard``: every rank draws the same batches and takes its slice of each global batch, so
  N ranks see the same images per step as one process with the same (global) ``batch_size``;
- ``wrap``: DistributedDataParallel around the part being trained (gradients are all-reduced);
- ``any_stop``: the stop flag is all-reduced, so Ctrl-C (or the app's Stop) on any rank stops all of them
  at the same step;
- ``sum_``: epoch statistics summed over ranks;
- ``is_main``: only rank 0 creates the run folder, writes checkpoint/history and reports progress.

Without torchrun, ``SINGLE`` answers every hook with "one process": no process group, nothing changes.
torch is imported inside the functions that use it: the CLI imports this module before it parses arguments.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pokedemo.config import resolve_device

# A rank that dies leaves the others blocked in a collective: gloo notices a closed connection at once, but a
# hung peer is only noticed when a collective times out. Ten minutes covers the slowest single step we run
# (a validation pass on a big split); POKEDEMO_DIST_TIMEOUT_S overrides it.
DEFAULT_TIMEOUT_S = 600
FAULT_ENV = "POKEDEMO_TEST_FAULT"  # tests only: "RANK:STEP:exit" or "RANK:STEP:sigint" (see fault_hook)


class PeerLost(RuntimeError):
    """Another process of the run failed or vanished; this one stops too."""


@dataclass(frozen=True)
class Parallel:
    """This process's place in a data-parallel run (world_size 1 = a plain single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---------------------------------------------------------------- device and batch

    def device(self, preference: str) -> Any:
        """The device of this rank: cuda:LOCAL_RANK on CUDA (set as the current device), else as resolved."""
        import torch


        device = resolve_device(preference)
        if self.enabled and device.type == "cuda":
            device = torch.device(device.type, self.local_rank)  # one GPU per process on this node
            torch.cuda.set_device(device)
        return device

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.world_size:
            raise ValueError(f"--batch-size {batch_size} is the global batch and must be divisible by the "
                             f"{self.world_size} processes (e.g. {self.world_size * max(1, batch_size // self.world_size)})")

    def describe(self, batch_size: int, lr: float, device: Any) -> str:
        return (f"Data-parallel training on {self.world_size} processes ({self.backend}, {device} on rank 0): "
                f"global batch {batch_size} = {self.world_size} × {batch_size // self.world_size} per process, "
                f"peak lr {lr:g} (the same as one process with batch {batch_size})")

    # ---------------------------------------------------------------- engine hooks

    def even_batches(self, batches: list) -> list:
        """Make the last batch of an epoch divisible by world_size, wrapping around to the epoch's first images,
        so every rank takes the same number of images and steps (as torch's DistributedSampler pads)."""
        if not self.enabled or not batches or len(batches[-1]) % self.world_size == 0:
            return batches
        import torch

        extra = self.world_size - len(batches[-1]) % self.world_size
        order = torch.cat(batches)
        wrapped = order.repeat(-(-extra // len(order)))[:extra]
        return [*batches[:-1], torch.cat([batches[-1], wrapped])]

    def shard(self, batch_indices: Any) -> Any:
        """This rank's slice of one global batch (strided, so each rank gets every class mix)."""
        return batch_indices[self.rank::self.world_size] if self.enabled else batch_indices

    def wrap(self, module: Any, device: Any) -> Any:
        """DistributedDataParallel around the trained module (broadcasts rank 0's weights once)."""
        if not self.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids)

    def vary_augmentation(self, seed: int) -> None:
        """Give each rank its own augmentation draws (they come from the global RNG, seeded alike on all ranks,
        which would crop every rank's images the same way). Single process: untouched."""
        if self.enabled:
            import torch

            torch.manual_seed(seed + 1_000_003 * self.rank)

    def any_stop(self, local: bool, device: Any) -> bool:
        """True on every rank as soon as one rank's stop flag is set (a collective: all ranks call it)."""
        if not self.enabled:
            return local
        import torch

        flag = torch.tensor([1.0 if local else 0.0], device=device)
        with collective("stop check"):
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def sum_(self, tensor: Any) -> Any:
        if self.enabled:
            import torch

            with collective("epoch statistics"):
                torch.distributed.all_reduce(tensor)
        return tensor

    def sum_epoch(self, loss_sum: Any, correct: Any, seen: int) -> tuple[Any, Any, int]:
        """(loss sum, correct, images seen) of one epoch over all ranks."""
        if not self.enabled:
            return loss_sum, correct, seen
        import torch

        totals = torch.stack([loss_sum.float(), correct.float(), torch.tensor(float(seen), device=loss_sum.device)])
        self.sum_(totals)
        return totals[0], totals[1], int(totals[2].item())

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (e.g. the run folder rank 0 created)."""
        if not self.enabled:
            return value
        import torch

        box = [value]
        with collective("run setup"):
            torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def fault_hook(self, step: int) -> None:
        """Tests only: simulate a rank that dies (exit 1) or is interrupted (SIGINT) at a global step."""
        spec = os.environ.get(FAULT_ENV)
        if not spec:
            return
        rank, at, action = spec.split(":")
        if int(rank) != self.rank or int(at) != step:
            return
        if action == "exit":
            os._exit(1)  # like a crash: no cleanup, no message
        os.kill(os.getpid(), signal.SIGINT)


SINGLE = Parallel()


@contextlib.contextmanager
def collective(what: str) -> Iterator[None]:
    """Turn a collective's failure (a peer died, or timed out) into one clear PeerLost line."""
    import torch

    try:
        yield
    except (RuntimeError, torch.distributed.DistError) as err:
        raise PeerLost(lost_message(what, err)) from None


def lost_message(what: str, err: BaseException) -> str:
    detail = " ".join(str(err).split()).split(". ")[0][:200]  # gloo/NCCL texts run on; the first sentence says it
    return (f"another process of this distributed run failed or stopped answering (during {what}); "
            f"stopping this one too, nothing more is written ({detail})")


def is_peer_failure(err: BaseException) -> bool:
    """A failure inside DDP's own gradient all-reduce (backward) or another collective."""
    import torch

    if isinstance(err, (PeerLost, torch.distributed.DistError)):
        return True
    text = str(err).lower()
    return torch.distributed.is_initialized() and any(
        key in text for key in ("gloo", "nccl", "connection closed", "connection reset", "timed out"))


def from_env() -> Parallel | None:
    """The torchrun environment of this process, or None when not started by torchrun."""
    if "LOCAL_RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return Parallel(rank=int(os.environ.get("RANK", "0")), world_size=int(os.environ["WORLD_SIZE"]),
                    local_rank=int(os.environ["LOCAL_RANK"]), backend="pending")


def backend_for(preference: str) -> str:
    """NCCL when this run trains on CUDA, gloo otherwise (CPU, and MPS which has no collective backend)."""
    return "nccl" if resolve_device(preference).type == "cuda" else "gloo"


@contextlib.contextmanager
def process_group(env: Parallel, device_preference: str) -> Iterator[Parallel]:
    """Join the torchrun process group for the run and leave it afterwards."""
    import torch.distributed as dist

    backend = backend_for(device_preference)
    timeout = _dt.timedelta(seconds=float(os.environ.get("POKEDEMO_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S)))
    ctx = Parallel(rank=env.rank, world_size=env.world_size, local_rank=env.local_rank, backend=backend)
    if backend == "nccl":
        import torch

        torch.cuda.set_device(env.local_rank)
    dist.init_process_group(backend=backend, timeout=timeout)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        yield ctx
        # No rank leaves before rank 0 has written its last checkpoint: torchrun ends the others (SIGTERM) as
        # soon as one process exits with an error status, such as 130 after a Ctrl-C.
        with contextlib.suppress(Exception):  # a peer already gone fails this at once; nothing to wait for
            dist.barrier()
    finally:
        signal.signal(signal.SIGTERM, previous)
        with contextlib.suppress(Exception):  # a peer may already be gone; leaving must not hide the real error
            dist.destroy_process_group()


def _terminated(signum: int, frame: Any) -> None:
    """torchrun sends SIGTERM to the surviving processes when one fails: end with a clear line, not silently.
    Raised as an exception, so an atomic checkpoint write in progress removes its temporary file."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once is enough; the message is being written
    raise PeerLost("another process of this distributed run failed or was stopped, and torchrun ended this one "
                   "(SIGTERM); nothing more is written (a checkpoint already saved stays, marked unfinished)")


def quiet_other_ranks(ctx: Parallel) -> None:
    """Ranks other than 0 print nothing to stdout (rank 0 reports for the run); errors still reach stderr."""
    if not ctx.is_main:
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - for the life of the process
