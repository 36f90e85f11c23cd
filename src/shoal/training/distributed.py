"""Data-parallel training on torch.distributed: the launcher, the process group, and what ranks share.

``shoal train --nproc N`` starts N copies of itself through torch.distributed's elastic launcher
(:func:`launch`, the API behind ``torchrun``); ``torchrun --nnodes ... -m shoal train ...`` starts
them on several machines the same way. Each copy reads its place from the launcher's environment
(:func:`world`: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and runs the same training:

- rank 0 registers the model and alone writes to its folder (events, snapshots, the resume point,
  the store entry, the bundle); it sends the resolved configuration and, on resume, the resume
  point to the others (:meth:`Group.share`), so they need only the dataset, not the model's folder;
- every rank trains on its shard of each epoch (:class:`shoal.training.batches.PixelBatches`),
  DDP all-reduces the gradients, and the validation sums are all-reduced (:meth:`Group.sum`);
- a stop asked of rank 0 (the ``ABORT`` file) stops every rank at the same step (:meth:`Group.agree`).

This module is torch-free until a process group is joined, so checking a configuration stays fast.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from shoal.errors import ConfigError, TrainingError

T = TypeVar("T")

# How long a rank waits for the others at a collective before giving up. A dead rank is noticed
# sooner (its connections close, and the launcher stops the rest); this bounds a rank that hangs.
COLLECTIVE_TIMEOUT_S = 600


class RankLost(TrainingError):
    """Another process of a data-parallel run died: the run is interrupted and resumes from its last epoch."""


@dataclass(frozen=True)
class World:
    """This process's place in a data-parallel run (rank 0 of 1 when it runs alone)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1  # the processes of the run on this machine

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes."""
        return self.rank == 0


def world() -> World:
    """This process's place, from the variables torch.distributed's launcher sets (none: alone)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(size)))
    except ValueError as exc:
        raise ConfigError(f"the launcher's RANK, WORLD_SIZE or LOCAL_RANK is not a number ({exc})") from None
    if size <= 1:
        return World()
    if not 0 <= rank < size:
        raise ConfigError(f"RANK {rank} is outside WORLD_SIZE {size}; start the processes with torchrun")
    return World(rank, size, local, max(1, local_size))


def check(config: Any, size: int) -> None:
    """Refuse, in one line and before anything starts, a configuration ``size`` processes cannot train.

    A fitted head spreads only its features over the processes (rank 0 fits it): any batch size works.

    Raises:
        ConfigError: the training loop's global batch does not split evenly.
    """
    if size <= 1 or config.head == "fit":
        return
    if config.batch_size % size:
        raise ConfigError(f"batch_size is the global batch and must split evenly over {size} processes, got "
                          f"{config.batch_size}; use a multiple of {size}, e.g. {config.batch_size // size * size or size}",
                          options=("batch_size",))


class Group:
    """The process group of a data-parallel run, or a stand-in that does nothing for one process."""

    def __init__(self, here: World) -> None:
        self.world = here
        self.device: Any = None  # the rank's training device, once known (:meth:`use`)
        if here.size > 1:
            import torch
            import torch.distributed as dist

            if not dist.is_initialized():  # gloo for the CPU's tensors, and nccl for the GPUs' where there are some
                backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
                dist.init_process_group(backend, timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))

    def use(self, device: Any) -> None:
        """Train on ``device`` (a GPU of its own for each rank on CUDA)."""
        self.device = device
        if device.type == "cuda":
            import torch

            torch.cuda.set_device(device)

    @property
    def size(self) -> int:
        return self.world.size

    def share(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object), on every rank."""
        if self.size == 1:
            return value
        import torch.distributed as dist

        import torch

        box = [value if self.world.main else None]
        dist.broadcast_object_list(box, src=0, device=torch.device("cpu"))
        return box[0]

    def sum(self, values: list[float]) -> list[float]:
        """Each value summed over the ranks."""
        if self.size == 1:
            return values
        import torch
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(tensor)
        return tensor.tolist()

    def gather(self, rows: Any) -> Any:
        """Every rank's ``rows`` (a NumPy array) concatenated in rank order, on rank 0; ``None`` on the others."""
        if self.size == 1:
            return rows
        import numpy as np
        import torch.distributed as dist

        parts: list[Any] | None = [None] * self.size if self.world.main else None
        dist.gather_object(rows, parts, dst=0)
        return np.concatenate(parts) if parts is not None else None

    def all_gather(self, rows: Any) -> Any:
        """Every rank's ``rows`` (a tensor; their lengths may differ) concatenated in rank order, on every rank."""
        if self.size == 1:
            return rows
        import torch
        import torch.distributed as dist

        length = torch.tensor([len(rows)], device=rows.device)
        lengths = [torch.zeros_like(length) for _ in range(self.size)]
        dist.all_gather(lengths, length)
        padded = rows.new_zeros((int(max(lengths)), *rows.shape[1:]))  # all_gather takes equal shapes
        padded[: len(rows)] = rows
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        dist.all_gather(parts, padded)
        return torch.cat([part[: int(n)] for part, n in zip(parts, lengths)])

    def shard(self, count: int) -> slice:
        """This rank's contiguous share of ``count`` items (the shares in rank order make up all of them)."""
        per, extra = divmod(count, self.size)
        start = self.world.rank * per + min(self.world.rank, extra)
        return slice(start, start + per + (self.world.rank < extra))

    def agree(self, flag: bool) -> bool:
        """True on every rank when any rank says so (a stop asked of rank 0 stops them all at the same step)."""
        return flag if self.size == 1 else self.sum([float(flag)])[0] > 0

    def wrap(self, module: Any, *, sync_bn: bool = False) -> Any:
        """``module`` in DistributedDataParallel (gradients all-reduced), batch norm synced if asked."""
        if self.size == 1:
            return module
        import torch

        if sync_bn:
            module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def close(self) -> None:
        if self.size > 1:
            import gc

            import torch.distributed as dist

            # DDP's reducer keeps the group alive; when a reference cycle holds it (an abort's traceback
            # does), it would be freed at interpreter exit, where gloo's threads abort the process.
            gc.collect()
            if dist.is_initialized():
                dist.destroy_process_group()

    def _collective_device(self) -> Any:
        cuda = self.device is not None and self.device.type == "cuda"
        return self.device if cuda else "cpu"  # nccl reduces on the GPU, gloo on the CPU


def in_group(run: Callable[[Group], T]) -> T:
    """``run(group)`` in this process's group, joined here and left after (nothing to join alone).

    Raises:
        RankLost: a collective failed because another process of the run is gone.
    """
    group = Group(world())
    try:
        return run(group)
    except Exception as exc:
        if group.size > 1 and lost_rank(exc):
            raise RankLost(f"another process of this {group.size}-process run stopped ({exc}); the run "
                           "is interrupted at its last saved epoch") from exc
        raise
    finally:
        group.close()


def lost_rank(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective failing because another rank is gone (not a bug of this one)."""
    try:
        import torch.distributed as dist
    except ImportError:
        return False
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        sign in text for sign in ("connection closed by peer", "connection reset by peer", "broken pipe", "gloo"))


# -- the launcher ----------------------------------------------------------------------------------

def gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def launch(args: list[str], *, nproc: int) -> None:
    """Start ``python -m shoal <args>`` in ``nproc`` processes on this machine through torch.distributed's
    elastic launcher (``torchrun --standalone --nproc-per-node nproc -m shoal ...``), and wait for them.

    Raises:
        LaunchFailed: a process failed or was killed (the others were stopped by the launcher).
        KeyboardInterrupt: Ctrl-C (the launcher passes it on to every process).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # The launcher's own log (workers started, a failure's table) says in many lines what
    # LaunchFailed says in one; its warnings stay.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)
    options = parse_args(["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0",
                          "--monitor-interval=0.2", "--module", "shoal", *args])
    try:
        run(options)
    except SignalException as exc:
        raise KeyboardInterrupt from exc
    except ChildFailedError as exc:
        raise LaunchFailed(exc.failures) from None


def check_processes(config: Any, nproc: int) -> None:
    """Refuse, before any process starts, a training ``nproc`` processes cannot run: the rules of
    :func:`check`, the loop's own checks, and one process per GPU on CUDA.

    Raises:
        ConfigError, TrainingError: naming the option to change.
    """
    from shoal.training import loop

    check(config, nproc)
    loop.check(config)
    if config.device in ("auto", "cuda") and 0 < gpus() < nproc:
        raise ConfigError(f"--nproc {nproc} asks for one process per GPU, but {gpus()} are visible; use "
                          f"--nproc {gpus()}, or --device cpu for gloo processes", options=("device",))


def train_processes(args: list[str], *, nproc: int, name: str, store: Any) -> str:
    """Run the training command line ``shoal <args>`` of model ``name`` in ``nproc`` processes on this
    machine (:func:`launch`, with ``store`` as their ``SHOAL_HOME``); return how it ended, ``done`` or
    ``aborted``. The CLI's ``--nproc`` and the web app's jobs both run here.

    Raises:
        KeyboardInterrupt: Ctrl-C or a stop by signal: every process stopped, the model is interrupted.
        RankLost: a process was killed: the others were stopped, the model is interrupted, and the
            message says how to resume it.
        TrainingError: a process failed (its error is above, on stderr).
    """
    from shoal import models

    previous = os.environ.get("SHOAL_HOME")
    os.environ["SHOAL_HOME"] = str(store.home)  # the processes inherit this process's environment
    try:
        launch(args, nproc=nproc)
    except KeyboardInterrupt:
        models.settle(name, store=store)
        raise
    except LaunchFailed as exc:
        if not store.exists("model", name):
            raise TrainingError(f"{exc} before model {name!r} was registered (its error is above)") from None
        entry = store.get("model", name)
        if exc.killed and entry.status in ("queued", "running", "failed"):
            store.update("model", name, status="interrupted", summary={"error": str(exc)})
        status = models.settle(name, store=store).status
        if status == "interrupted":
            raise RankLost(f"{exc}: model {name!r} is interrupted at its last saved epoch; resume it with "
                           f"'shoal train --resume {name} --nproc {nproc}'") from None
        raise TrainingError(f"{exc}: model {name!r} {status} (its error is above)") from None
    finally:
        if previous is None:
            os.environ.pop("SHOAL_HOME", None)
        else:
            os.environ["SHOAL_HOME"] = previous
    return "aborted" if models.status(name, store=store).status == "aborted" else "done"


class LaunchFailed(TrainingError):
    """A process of a data-parallel run failed or was killed."""

    def __init__(self, failures: dict[int, Any]) -> None:
        self.killed = {rank: f.signal_name() for rank, f in failures.items() if f.exitcode < 0}
        self.exited = {rank: f.exitcode for rank, f in failures.items() if f.exitcode > 0}
        parts = [f"rank {rank} was killed ({name})" for rank, name in sorted(self.killed.items())]
        parts += [f"rank {rank} exited with status {code}" for rank, code in sorted(self.exited.items())]
        super().__init__("; ".join(parts) or "a training process failed")
