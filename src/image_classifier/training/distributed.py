"""Several training processes: PyTorch's DistributedDataParallel, started by ``torchrun``.

``torchrun --nproc_per_node=N -m image_classifier train DATA ...`` starts N copies of the command
with ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set;
:func:`init_from_environment` joins them into one process group (gloo on CPUs, nccl on GPUs, one
GPU per process). Everything else about a distributed run lives in the trainer, which asks this
module only for the few collective operations below: a sum over processes, rank 0's value of an
object, the rows each process computes and all of them gathered.

A process that dies ends the job: ``torchrun`` sees it exit and stops the others, and a process
blocked in a collective with a dead peer gets an error at once (or, if the peer hangs without
dying, after ``IMAGE_CLASSIFIER_DIST_TIMEOUT`` seconds, default 300), which the trainer turns into
:class:`DistributedJobError`.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from image_classifier.device import parse_device, resolve_device
from image_classifier.errors import ImageClassifierError, OptionError

log = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 300.0


class DistributedJobError(ImageClassifierError):
    """Another process of a distributed job died or stopped answering: this one cannot go on."""


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: one process (the default) or rank ``rank`` of ``world_size``."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs progress and writes files."""
        return self.rank == 0

    def to_card(self) -> dict[str, Any] | None:
        return {"world_size": self.world_size, "backend": self.backend} if self.enabled else None


SINGLE = Dist()


def timeout_seconds() -> float:
    value = os.environ.get("IMAGE_CLASSIFIER_DIST_TIMEOUT")
    try:
        return float(value) if value else DEFAULT_TIMEOUT_S
    except ValueError:
        raise OptionError(f"IMAGE_CLASSIFIER_DIST_TIMEOUT={value!r}: expected a number of seconds") from None


def world_size_from_environment() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init_from_environment(device_spec: str | None = "auto") -> tuple[Dist, torch.device]:
    """This process's :class:`Dist` and device. Under ``torchrun`` (``WORLD_SIZE`` > 1) it joins the
    process group; each process on a GPU machine takes GPU ``LOCAL_RANK`` unless ``cuda:N`` names one."""
    world = world_size_from_environment()
    device = resolve_device(device_spec)
    if world <= 1:
        return SINGLE, device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if parse_device(device_spec)[1] is None:  # no cuda:N given: this process's own GPU
            if local_rank >= torch.cuda.device_count():
                raise OptionError(f"process {local_rank} on this machine has no GPU of its own: "
                                  f"{torch.cuda.device_count()} GPU(s) for --nproc_per_node processes; "
                                  "start at most one process per GPU")
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds()))
    log.info("process %d of %d (%s, %s)", rank, world, backend, device)
    return Dist(world, rank, local_rank, backend), device


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def _comm_device(d: Dist, device: torch.device) -> torch.device:
    return device if d.backend == "nccl" else torch.device("cpu")


def all_reduce_sum(d: Dist, values: list[float], device: torch.device) -> list[float]:
    """Each value summed over the processes (as is with one process)."""
    if not d.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device(d, device))
    dist.all_reduce(t)
    return t.tolist()


def broadcast_object(d: Dist, obj: T) -> T:
    """Rank 0's ``obj`` on every process (a picklable object: decisions, a resume state)."""
    if not d.enabled:
        return obj
    box = [obj if d.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(d: Dist, obj: T) -> list[T]:
    """Every process's ``obj`` (picklable), in rank order, on every process (``[obj]`` alone)."""
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def shard(n: int, d: Dist) -> range:
    """The rows of ``n`` this process computes: a contiguous ``ceil(n / world)`` (the last may be shorter)."""
    if not d.enabled:
        return range(n)
    size = math.ceil(n / d.world_size)
    return range(min(n, d.rank * size), min(n, (d.rank + 1) * size))


def all_gather_rows(d: Dist, local: torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    """The (n, ...) tensor whose rows :func:`shard` gave to each process, from this process's ``local`` rows."""
    if not d.enabled:
        return local
    size = math.ceil(n / d.world_size)
    comm = _comm_device(d, device)
    row_shape = tuple(local.shape[1:])
    padded = torch.zeros((size, *row_shape), dtype=local.dtype, device=comm)
    padded[: local.shape[0]] = local.to(comm)
    # Sent as raw bytes: gloo gathers neither bfloat16 nor int16, and a gather needs no arithmetic.
    wire = padded.reshape(size, -1).view(torch.uint8)
    parts = [torch.empty_like(wire) for _ in range(d.world_size)]
    dist.all_gather(parts, wire)
    rows = torch.cat(parts)[:n].view(local.dtype).reshape(n, *row_shape)
    if local.dim() == 4 and local.is_contiguous(memory_format=torch.channels_last):
        rows = rows.contiguous(memory_format=torch.channels_last)
    return rows


def is_collective_failure(err: BaseException) -> bool:
    """Whether an error came from a collective whose peers are gone (not from this process's own code)."""
    dist_error = getattr(dist, "DistError", None)
    if dist_error is not None and isinstance(err, dist_error):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(w in text for w in ("gloo", "nccl", "connection", "peer", "timed out"))
