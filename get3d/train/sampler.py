"""Seeded, resumable data order.

The order is a function of ``(seed, epoch)`` only: epoch ``e`` is ``randperm(N)`` drawn from a
``torch.Generator`` seeded with ``seed * 1_000_003 + e``. The position is the number of samples consumed
(``cur_nimg``), so a resumed run continues exactly where the snapshot was taken, on any world size.
Each global batch is cut into chunks; a rank yields only the chunks it processes.
"""
from __future__ import annotations

import torch
from torch.utils.data import Sampler


def _epoch_perm(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63 - 1))
    return torch.randperm(n, generator=g)


def global_indices(n: int, seed: int, start: int, count: int) -> list[int]:
    """Dataset indices of samples ``start .. start+count-1`` of the infinite seeded stream."""
    if n <= 0:
        raise ValueError("dataset is empty")
    out: list[int] = []
    pos = start
    while len(out) < count:
        epoch, off = divmod(pos, n)
        perm = _epoch_perm(n, seed, epoch)
        take = min(n - off, count - len(out))
        out.extend(perm[off:off + take].tolist())
        pos += take
    return out


class ResumableBatchSampler(Sampler[list[int]]):
    """Yields, for global step ``k = 0, 1, ...`` from ``start_nimg``, this rank's chunks of the global batch.

    Each yielded item is one chunk (``batch_per_gpu`` indices); the loop takes ``len(chunks)`` items per step.
    """

    def __init__(self, n: int, seed: int, batch_size: int, batch_per_gpu: int, chunks: range, start_nimg: int = 0):
        self.n, self.seed, self.batch_size, self.bpg = n, seed, batch_size, batch_per_gpu
        self.chunks, self.start_nimg = chunks, start_nimg

    def state_dict(self) -> dict:
        return {"seed": self.seed, "n": self.n, "batch_size": self.batch_size, "start_nimg": self.start_nimg}

    def __iter__(self):
        pos = self.start_nimg
        while True:
            idx = global_indices(self.n, self.seed, pos, self.batch_size)
            for c in self.chunks:
                yield idx[c * self.bpg:(c + 1) * self.bpg]
            pos += self.batch_size

    def __len__(self):  # infinite; DataLoader only needs this for len(loader)
        return 2**62
