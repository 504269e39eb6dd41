"""Process-group setup for torchrun launches; a plain ``python`` launch is one rank of one.

Collectives used by the run's control plane (:func:`agree_max`, :func:`broadcast_object`) are no-ops
in a single process, so callers need no ``if world_size > 1``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """This process's place in the run: global ``rank`` of ``world_size``, GPU ``local_rank``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this process created the process group (and destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (a no-op in a single process)."""
        if self.world_size > 1:
            dist.barrier()

    def close(self) -> None:
        """Destroy the process group this process created (torchrun expects a clean shutdown)."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def process_group_options(device_type: str, local_rank: int, timeout_minutes: float) -> dict[str, Any]:
    """Keyword arguments of ``init_process_group``: backend, collective timeout, and on CUDA the
    ``device_id`` that binds the rank to its GPU (eager NCCL init, no guessing of the device)."""
    options: dict[str, Any] = {
        "backend": "nccl" if device_type == "cuda" else "gloo",
        "timeout": timedelta(minutes=timeout_minutes),
    }
    if device_type == "cuda":
        options["device_id"] = torch.device("cuda", local_rank)
    return options


def init_distributed(device_type: str, timeout_minutes: float = 30.0) -> DistInfo:
    """Join the torchrun process group when launched by torchrun (gloo on CPU, nccl on CUDA)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    owns = not dist.is_initialized()
    if owns:
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        options = process_group_options(device_type, local_rank, timeout_minutes)
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        store = attempt_store(rank, world, options["timeout"])
        dist.init_process_group(**options, store=store, rank=rank, world_size=world)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, owns)


def attempt_store(rank: int, world_size: int, timeout: timedelta) -> dist.Store:
    """torchrun's store (``MASTER_ADDR:MASTER_PORT``: its agent's, or one rank 0 hosts) with a key prefix
    per restart attempt (``TORCHELASTIC_RESTART_COUNT``): after ``--max-restarts`` restarts a worker
    group, gloo's connection set-up must not read the addresses the previous attempt's ranks left in
    the agent's store (seen with torch 2.14: the restarted rank 0 connected to a dead rank's port)."""
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world_size,
        is_master=rank == 0 and not agent,
        timeout=timeout,
    )
    return dist.PrefixStore(f"gsg/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def agree_max(values: list[float], device: torch.device, info: DistInfo) -> list[float]:
    """The element-wise maximum of ``values`` over all ranks: how ranks agree on flags (stop, save,
    non-finite loss) at the same step. One small all-reduce; identity in a single process."""
    if info.world_size == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def sum_over_ranks(values: list[float], device: torch.device, info: DistInfo) -> list[float]:
    """``values`` summed element-wise over all ranks in one all-reduce (identity in one process)."""
    if info.world_size == 1:
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (picklable plain data only)."""
    if info.world_size == 1:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (picklable plain data only)."""
    if info.world_size == 1:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
