"""Data sets read from a remote store on demand: what the torch ``Dataset`` needs of a reader (e.g.
``segmodels.versioning.stream.StreamReader``, which this layer never imports) and a sampler that prefetches ahead."""

from __future__ import annotations

from typing import BinaryIO, Callable, ContextManager, Iterable, Iterator, Protocol

from torch.utils.data import Sampler


class RemoteFiles(Protocol):
    """Files of a data set's layout by relative POSIX path (``images/train/a.jpg``)."""

    def list(self, folder: str) -> list[str]:
        """The files directly in ``folder``, sorted, without names starting with a dot."""

    def exists(self, path: str) -> bool: ...

    def open(self, path: str) -> ContextManager[BinaryIO]: ...

    def prefetch(self, paths: Iterable[str]) -> None:
        """Start fetching ``paths`` in the background."""


class PrefetchingSampler(Sampler):
    """``sampler``'s keys in its order, asking ``dataset.prefetch`` for the next ``ahead`` samples after the one it
    yields (0: none); ``index_of`` turns a key into the dataset's index. ``set_epoch`` reaches ``sampler`` when it
    has one."""

    def __init__(self, sampler: Iterable, dataset, ahead: int, index_of: Callable = lambda key: key):
        self.sampler, self.dataset, self.ahead, self.index_of = sampler, dataset, ahead, index_of

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator:
        keys = list(self.sampler)
        asked = 0
        for position, key in enumerate(keys):
            start, end = max(asked, position + 1), min(len(keys), position + self.ahead + 1)
            if end > start:  # not the sample read now: prefetching it too would fetch it twice at once
                self.dataset.prefetch([self.index_of(k) for k in keys[start:end]])
                asked = end
            yield key
