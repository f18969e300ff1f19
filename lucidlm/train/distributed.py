"""Data-parallel training with torch.distributed, when launched by torchrun.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; we then join the process group (gloo on CPU,
nccl on CUDA), wrap the model in DistributedDataParallel, and only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..errors import LucidError


@dataclass
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def join(device: torch.device) -> World:
    """Join the process group if torchrun started us; otherwise a world of one."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return World()
    import torch.distributed as dist

    world = World(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), int(os.environ["WORLD_SIZE"]))
    if device.type == "cuda" and world.local_rank >= torch.cuda.device_count():  # before joining: nothing to undo
        raise LucidError(f"process {world.local_rank} of this machine has no GPU of its own (there are "
                         f"{torch.cuda.device_count()}): launch at most that many per node, or pass --device cpu")
    if not dist.is_initialized():
        if device.type == "cuda":  # naming the GPU binds NCCL to it (otherwise it guesses from the rank)
            dist.init_process_group(backend="nccl", device_id=torch.device("cuda", world.local_rank))
        else:
            dist.init_process_group(backend="gloo")
    return world


def local_device(device: torch.device, world: World) -> torch.device:
    """Each process of a multi-GPU run takes its own GPU."""
    if device.type == "cuda" and world.distributed:
        torch.cuda.set_device(world.local_rank)
        return torch.device("cuda", world.local_rank)
    return device


def average(value: torch.Tensor, world: World) -> torch.Tensor:
    if world.distributed:
        import torch.distributed as dist

        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= world.size
    return value


def barrier(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        dist.barrier()


def leave(world: World, clean: bool = True) -> None:
    """Leave the process group. After an error or Ctrl-C (clean=False) a peer may be gone or stuck in a
    collective, so we neither wait for it nor tear the group down; the process is ending anyway."""
    if world.distributed and clean:
        import torch.distributed as dist

        if dist.is_initialized():
            import gc

            # A 2-process gloo run aborted at exit about one time in five ("terminate called without
            # an active exception") when the DistributedDataParallel wrapper still held the group and
            # one rank tore it down while its peer was finishing. Freeing the wrapper first, or a
            # barrier, each stopped it in 20 runs; we do both.
            gc.collect()  # the wrapper the caller dropped, and its reducer
            dist.barrier()
            dist.destroy_process_group()
