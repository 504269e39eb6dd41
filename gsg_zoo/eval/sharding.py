"""Work split across torchrun ranks: each rank embeds a contiguous shard of a dataset, and the rows are
gathered back in dataset order.

The gathered features equal one process's up to floating-point summation order: every image goes
through the same network in eval mode, only the batches it shares with other images differ (a
convolution's kernel may sum in another order for another batch size). Labels are gathered exactly.

Rows travel in blocks of at most ``block_bytes`` per rank through ``all_gather`` (NCCL on CUDA
tensors, gloo on CPU ones); only the destination ranks keep them, on the CPU, so a 1.28M x 2048 bank
never sits whole in GPU memory.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import Dataset, Subset

from ..core.distributed import DistInfo

BLOCK_BYTES = 256 << 20  # bytes per all_gather buffer, all ranks together


def shard_range(n: int, rank: int, world_size: int) -> range:
    """Rank ``rank``'s contiguous share of ``range(n)`` (sizes differ by at most one)."""
    return range(n * rank // world_size, n * (rank + 1) // world_size)


def shard_dataset(dataset: Dataset, info: DistInfo) -> Dataset:
    """This rank's contiguous shard of ``dataset`` (the dataset itself in a single process)."""
    if info.world_size == 1:
        return dataset
    return Subset(dataset, list(shard_range(len(dataset), info.rank, info.world_size)))  # type: ignore[arg-type]


def comm_device() -> torch.device:
    """Where collective buffers live: the current CUDA device under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_rows(
    local: Tensor | None, info: DistInfo, to_all: bool = False, block_bytes: int = BLOCK_BYTES
) -> Tensor:
    """Every rank's ``local`` rows concatenated in rank order: on every rank with ``to_all``, else on
    rank 0 only (an empty tensor elsewhere). ``local`` may be None or empty on a rank whose shard is."""
    if info.world_size == 1:
        if local is None:
            raise ValueError("nothing to gather: the shard is empty")
        return local
    meta = [None] * info.world_size
    mine = None if local is None or len(local) == 0 else (len(local), tuple(local.shape[1:]), local.dtype)
    dist.all_gather_object(meta, mine)
    known = [m for m in meta if m is not None]
    if not known:
        raise ValueError("nothing to gather: every rank's shard is empty")
    _, tail, dtype = known[0]
    counts = [0 if m is None else m[0] for m in meta]
    keep = to_all or info.is_main
    device = comm_device()
    row_bytes = max(math.prod(tail), 1) * torch.empty((), dtype=dtype).element_size()
    block = max(1, block_bytes // (info.world_size * row_bytes))
    parts: list[list[Tensor]] = [[] for _ in range(info.world_size)]
    for start in range(0, max(counts), block):
        rows = min(block, max(counts) - start)
        buf = torch.zeros((rows, *tail), dtype=dtype, device=device)
        if local is not None and start < len(local):
            mine_rows = local[start : start + rows]
            buf[: len(mine_rows)] = mine_rows.to(device)
        out = [torch.empty_like(buf) for _ in range(info.world_size)]
        dist.all_gather(out, buf)
        if keep:
            for r, got in enumerate(out):
                parts[r].append(got[: max(0, min(rows, counts[r] - start))].cpu())
    if not keep:
        return torch.empty((0, *tail), dtype=dtype)
    return torch.cat([torch.cat(p) for p in parts if p])
