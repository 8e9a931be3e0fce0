"""Data-parallel training under ``torchrun``: one process per GPU (NCCL) or per CPU worker (gloo).

- World: read from the ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` variables torchrun sets; without them the
  run is a single process and nothing here talks to the network.
- Batch split: the global batch is cut into chunks of ``batch_per_gpu``; rank ``r`` takes a contiguous
  share of the chunks, so any world size works as long as there are at least as many chunks as ranks.
  Every loss is a *sum over samples / global batch*, and gradients are **summed** across ranks, so the
  update equals the single-process one whatever the split (up to float summation order).
- Gradients: all parameters' grads are flattened into one buffer, all-reduced (SUM) once per phase, and
  copied back. No DDP wrapper: the phases use different subsets of the networks and R1 needs a double
  backward, which DDP handles poorly.
- Failure: the process group is created with ``timeout=dist_timeout_s`` and NCCL's async error handling, so
  a rank blocked on a dead peer raises instead of hanging; torchrun also tears the group down as soon as
  one worker exits non-zero. Only rank 0 writes files.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


class DistributedError(RuntimeError):
    pass


def world_from_env() -> World:
    ws = int(os.environ.get("WORLD_SIZE", "1"))
    return World(rank=int(os.environ.get("RANK", "0")), world_size=ws,
                 local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def init(device_pref: str, timeout_s: float) -> tuple[World, torch.device]:
    """Join the process group (if launched by torchrun) and choose this rank's device."""
    world = world_from_env()
    use_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise DistributedError("train.device is 'cuda' but torch.cuda.is_available() is False")
    if use_cuda:
        if world.local_rank >= torch.cuda.device_count():
            raise DistributedError(f"LOCAL_RANK {world.local_rank} but only {torch.cuda.device_count()} GPU(s) visible")
        torch.cuda.set_device(world.local_rank)
        device = torch.device("cuda", world.local_rank)
    else:
        device = torch.device("cpu")
    if world.distributed and not dist.is_initialized():
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        backend = "nccl" if use_cuda else "gloo"
        kwargs = {"backend": backend, "timeout": datetime.timedelta(seconds=timeout_s)}
        if use_cuda:
            kwargs["device_id"] = device
        dist.init_process_group(**kwargs)
        if dist.get_world_size() != world.world_size:
            raise DistributedError(f"WORLD_SIZE={world.world_size} but the process group has {dist.get_world_size()}")
    return world, device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_chunks(num_chunks: int, world: World) -> range:
    """Chunk indices (of a global batch cut into ``num_chunks``) that this rank processes."""
    if num_chunks < world.world_size:
        raise DistributedError(f"global batch has {num_chunks} chunk(s) of batch_per_gpu but the world has "
                               f"{world.world_size} ranks: raise train.batch_size or lower train.batch_per_gpu")
    lo = world.rank * num_chunks // world.world_size
    hi = (world.rank + 1) * num_chunks // world.world_size
    return range(lo, hi)


def allreduce_grads(params: list[torch.nn.Parameter], world: World) -> None:
    """Sum gradients across ranks in one flat buffer (params without grad count as zeros)."""
    if not world.distributed or not params:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    off = 0
    for p in params:
        n = p.numel()
        g = flat[off:off + n].view_as(p)
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)
        off += n


def allreduce_sum(t: torch.Tensor, world: World) -> torch.Tensor:
    if world.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_module_buffers(module: torch.nn.Module, world: World, src: int = 0) -> None:
    """Make buffers (e.g. w_avg) equal on all ranks (rank 0's values)."""
    if not world.distributed:
        return
    for b in module.buffers():
        dist.broadcast(b.data, src=src)


def broadcast_module_params(module: torch.nn.Module, world: World, src: int = 0) -> None:
    if not world.distributed:
        return
    for p in module.parameters():
        dist.broadcast(p.data, src=src)
    broadcast_module_buffers(module, world, src)


def broadcast_flag(flag: bool, world: World, device) -> bool:
    """Rank 0's boolean, on every rank."""
    if not world.distributed:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def any_flag(flag: bool, world: World, device) -> bool:
    """True on every rank when any rank passes True."""
    if not world.distributed:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()
