"""Embedding on many processes, GPUs or machines with torch.distributed (``torchrun``).

    torchrun --nproc-per-node 4 -m vitsearch index ./photos --uri http://milvus:19530

Rank 0 plans the run (walks the folders, compares them with the store, hashes what changed) and
sends every rank the same list of images to embed; each rank embeds its own shard, one image in
``world_size``. On a Milvus server every rank writes its own rows; a Milvus Lite file belongs to one
process, so there rank 0 alone opens it and the other ranks send it their rows. Deletions and
metadata-only updates are rank 0's, after every rank has finished.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass
class Dist:
    """This process's place in a torch.distributed group (``torchrun`` sets the environment)."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj``, on every rank."""
        import torch.distributed as td

        box = [obj if self.is_main else None]
        td.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (in rank order); None on the others."""
        import torch.distributed as td

        out = [None] * self.world_size if self.is_main else None
        td.gather_object(obj, out, dst=0)
        return out

    def barrier(self) -> None:
        import torch.distributed as td

        td.barrier()


def world_size_from_env() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init_from_env(device: str = "auto") -> Dist | None:
    """Join the process group that ``torchrun`` describes in the environment; None when run alone.

    The backend is NCCL when the ranks embed on GPUs, gloo otherwise. Each rank on a GPU machine
    takes the GPU of its ``LOCAL_RANK``. Objects (file lists, rows) travel over a gloo group either way.
    """
    if world_size_from_env() <= 1:
        return None
    import torch
    import torch.distributed as td

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    on_gpu = device != "cpu" and torch.cuda.is_available()
    if on_gpu:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    if not td.is_initialized():
        # object collectives need a CPU-capable backend; "cpu:gloo,cuda:nccl" gives both
        td.init_process_group(backend="cpu:gloo,cuda:nccl" if on_gpu else "gloo")
    return Dist(td.get_rank(), td.get_world_size(), local_rank)


def shutdown() -> None:
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.destroy_process_group()
