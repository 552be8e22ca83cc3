"""``salmonn eval`` under torchrun: rank and world size, and barriers between the ranks' shards."""

from __future__ import annotations

import datetime
import os


class Distributed:
    """Rank and world size from torchrun's environment; a gloo process group only when WORLD_SIZE > 1."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self._group = False

    @classmethod
    def from_env(cls) -> "Distributed":
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))

    def __enter__(self) -> "Distributed":
        if self.world_size > 1:
            import torch.distributed as dist
            if not dist.is_initialized():
                # Only barriers cross processes, so gloo works for CPU and GPU runs alike; ranks may wait a long
                # time for the slowest shard.
                dist.init_process_group("gloo", timeout=datetime.timedelta(hours=24))
                self._group = True
        return self

    def __exit__(self, *exc) -> None:
        if self._group:
            import torch.distributed as dist
            dist.destroy_process_group()
            self._group = False

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist
            dist.barrier()

    @property
    def is_main(self) -> bool:
        return self.rank == 0
