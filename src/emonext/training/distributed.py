"""Distributed data-parallel training: process group, rank info, sharding and collectives.

``torchrun --nproc-per-node N -m emonext.train ...`` starts N copies of the trainer with
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in their environment. :func:`distributed_session`
turns that environment into a :class:`DistributedContext`: it initialises ``torch.distributed``
(gloo on CPU, NCCL on CUDA with device ``cuda:LOCAL_RANK``) and tears the group down again, also
when training fails. Without those variables (or with ``WORLD_SIZE=1``) the context describes a
single process and every collective is a no-op, so the trainer has one code path.

The context's collectives are the few the trainer needs: sums of the epoch's train statistics,
a broadcast of rank 0's per-epoch decisions (metrics, best score, stop reason), an agreement
that every rank's loss is finite, and barriers around files that rank 0 writes.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from emonext.models import EmotionModel, ModelOutput
from emonext.runtime import select_device

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Added ``rank`` times to a seed, so each rank draws different augmentation and stochastic depth
#: (rank 0 keeps the single-process seed). The 32-bit golden-ratio constant spreads the seeds of
#: neighbouring ranks far apart from the ``(seed, epoch)`` seeds of neighbouring epochs.
RANK_SEED_STRIDE = 0x9E3779B1


def rank_seed(seed: int, rank: int) -> int:
    """``seed`` for rank 0, a different seed for every other rank."""
    return seed + rank * RANK_SEED_STRIDE


def world_size_from_env() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 when unset)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_from_env() -> int:
    """This process's global ``RANK`` as set by torchrun (0 when unset or not distributed)."""
    return int(os.environ.get("RANK", "0")) if world_size_from_env() > 1 else 0


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a (possibly one-process) data-parallel run.

    Args:
        device: The device this process trains on.
        rank: Global rank, 0 ... ``world_size - 1``.
        local_rank: Rank on this machine (selects the GPU).
        world_size: Number of processes.
    """

    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        """True when several processes train together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, validates and writes files."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums of ``values`` over all ranks (float64, so counts stay exact).

        Args:
            values: This rank's numbers.

        Returns:
            The sums, identical on every rank.
        """
        if not self.distributed:
            return list(values)
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def all_true(self, flag: bool) -> bool:
        """True only when ``flag`` is true on every rank, so all ranks take the same branch."""
        if not self.distributed:
            return flag
        tensor = torch.tensor([int(flag)], dtype=torch.int32, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
        return bool(tensor.item())

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (any picklable object; others pass a placeholder).

        Args:
            value: The object on rank 0; ignored elsewhere.

        Returns:
            Rank 0's object.
        """
        if not self.distributed:
            return value
        holder: list[Any] = [value]
        dist.broadcast_object_list(holder, src=0, device=self.device if self.device.type == "cuda" else None)
        return holder[0]

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's share of an epoch's global sample order.

        :class:`~torch.utils.data.DistributedSampler` over the positions of ``order`` (no
        shuffling: ``order`` is already the epoch's shuffled, identical-on-every-rank order) gives
        rank ``r`` positions ``r, r + W, r + 2W, ...`` and pads the order with its first few
        entries to a multiple of ``W``, so every rank runs the same number of steps (DDP hangs when
        one rank takes a step the others do not). With one process the shard is ``order`` itself.

        Args:
            order: Dataset indices in this epoch's order.

        Returns:
            The indices this rank trains on, ``ceil(len(order) / world_size)`` of them.
        """
        sampler = DistributedSampler(
            range(len(order)), num_replicas=self.world_size, rank=self.rank, shuffle=False, drop_last=False
        )
        return order[torch.as_tensor(list(sampler), dtype=torch.long)]

    def shard_size(self, total: int) -> int:
        """Samples per rank when ``total`` samples are sharded (what :meth:`shard` returns)."""
        return -(-total // self.world_size)


class AttentionForward(nn.Module):
    """A module whose ``forward`` is ``model.forward_with_attention``.

    DDP synchronises gradients through hooks it arms in its own ``forward`` only; training needs
    the attention weights as well as the logits, so this wrapper's ``forward`` (which DDP wraps)
    returns both, and no training step goes around DDP.

    Args:
        model: The classifier; it stays the owner of the weights (saved without a prefix).
    """

    def __init__(self, model: EmotionModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> ModelOutput:
        return self.model.forward_with_attention(images)


def training_module(model: EmotionModel, context: DistributedContext) -> nn.Module:
    """What a training step calls: the model's attention forward, DDP-wrapped when distributed.

    Args:
        model: The classifier, already on ``context.device``.
        context: This process's place in the run.

    Returns:
        A module whose forward returns :class:`~emonext.models.ModelOutput`.
    """
    step_module = AttentionForward(model)
    if not context.distributed:
        return step_module
    # DDP broadcasts rank 0's weights and buffers now, and rank 0's buffers (the STN's BatchNorm
    # statistics) before every forward, so every step starts from the same model on every rank.
    return DistributedDataParallel(
        step_module, device_ids=[context.device.index] if context.device.type == "cuda" else None
    )


@contextlib.contextmanager
def distributed_session(requested_device: str = "auto") -> Iterator[DistributedContext]:
    """Join the torchrun process group for the duration of a run (or describe one process).

    Args:
        requested_device: ``train.device``; under torchrun a CUDA request means ``cuda:LOCAL_RANK``.

    Yields:
        This process's context.

    Raises:
        RuntimeError: ``WORLD_SIZE`` > 1 without ``RANK``/``LOCAL_RANK``, or torch was built
            without distributed support.
    """
    world_size = world_size_from_env()
    device = select_device(requested_device)
    if world_size <= 1:
        yield DistributedContext(device=device)
        return
    try:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    except KeyError as missing:
        raise RuntimeError(
            f"WORLD_SIZE={world_size} but {missing.args[0]} is not set; launch with torchrun"
        ) from None
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; train with one process")
    if device.type == "cuda":
        if device.index is not None and device.index != local_rank:
            logger.warning("train.device=%s ignored under torchrun: rank uses cuda:%d", device, local_rank)
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    context = DistributedContext(device=device, rank=rank, local_rank=local_rank, world_size=world_size)
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", init_method="env://")
    try:
        yield context
    finally:
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()


@contextlib.contextmanager
def main_rank_logging(context: DistributedContext, name: str = "emonext") -> Iterator[None]:
    """Let only rank 0 log below WARNING (under logger ``name``) while the block runs.

    Args:
        context: This process's place in the run.
        name: The logger to quieten on the other ranks.

    Yields:
        Nothing; the previous level is restored afterwards.
    """
    if context.is_main:
        yield
        return
    quieted = logging.getLogger(name)
    previous = quieted.level
    quieted.setLevel(max(previous, logging.WARNING))
    try:
        yield
    finally:
        quieted.setLevel(previous)
