"""Reproducible data order and augmentation: each sample's random transforms run under a seed derived from
(run seed, epoch, index), so a resumed, a multi-worker or a multi-process run sees the same samples."""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import Dataset, Sampler

_SEED_MODULUS = 2**63 - 1


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Seed of the random transforms applied to sample ``index`` in ``epoch``."""
    return ((int(seed) * 1_000_003 + int(epoch)) * 1_000_033 + int(index)) % _SEED_MODULUS


class EpochSampler(Sampler):
    """Shuffles per epoch with a generator seeded by (seed, epoch) and yields ``(sample_seed, index)`` keys
    for the shard of process ``rank`` (padded by repetition so every process gets the same count, like
    ``DistributedSampler``). Call :meth:`set_epoch` before iterating."""

    def __init__(self, num_samples: int, seed: int, rank: int, world_size: int):
        self.num_samples, self.seed = num_samples, int(seed)
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.world_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, 0))
        order = torch.randperm(self.num_samples, generator=generator).tolist()
        total = len(self) * self.world_size
        order += order[: total - len(order)]
        for index in order[self.rank : total : self.world_size]:
            yield sample_seed(self.seed, self.epoch, index), index


class SeededDataset(Dataset):
    """Wraps a dataset so ``dataset[(seed, index)]`` runs its transforms with the CPU generator seeded by
    ``seed`` (torchvision's transforms draw from it), restoring the caller's generator state afterwards.
    Seeds ``torch.default_generator`` directly: ``torch.manual_seed`` also seeds every accelerator and costs
    ~100x more per sample."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        seed, index = key
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            generator.set_state(state)
