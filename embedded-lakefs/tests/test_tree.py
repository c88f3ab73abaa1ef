"""Committed trees (``embedded_lakefs.tree``): random changes against a dict, canonical roots, and the cost bounds."""

from __future__ import annotations

import random

import pytest

from embedded_lakefs.tree import EMPTY_TREE, MemoryNodes, NodeCache, Trees


class CountingNodes(MemoryNodes):
    """Counts node reads and writes (with a cache of 1, every read reaches the store)."""

    def __init__(self):
        super().__init__()
        self.reads = self.writes = 0

    def get(self, node_id):
        self.reads += 1
        return super().get(node_id)

    def put(self, node_id, data):
        self.writes += node_id not in self.nodes
        super().put(node_id, data)


def random_changes(rng: random.Random, model: dict, count: int) -> dict:
    changes = {}
    for _ in range(count):
        roll = rng.random()
        if roll < 0.35 and model:
            changes[rng.choice(list(model))] = None
        elif roll < 0.6 and model:
            changes[rng.choice(list(model))] = ["changed", rng.random()]
        else:
            changes[f"dir-{rng.randrange(30)}/obj-{rng.randrange(10**6):06d}"] = ["new", rng.random()]
    return changes


@pytest.mark.parametrize("seed", range(40))
def test_changes_give_the_tree_built_from_scratch_and_read_back_like_a_dict(seed):
    rng = random.Random(seed)
    trees = Trees(MemoryNodes())
    size = rng.choice([0, 1, 2, 50, 600, 4000])
    model = {f"dir-{rng.randrange(30)}/obj-{rng.randrange(10**6):06d}": [i] for i in range(size)}
    root = trees.build(sorted(model.items()))
    for _ in range(4):
        changes = random_changes(rng, model, rng.choice([1, 10, 300, 3000]))
        before, before_root = dict(model), root
        for key, value in changes.items():
            if value is None:
                model.pop(key, None)
            else:
                model[key] = value
        root = trees.apply(root, sorted(changes.items()))
        assert root == trees.build(sorted(model.items()))  # canonical: the same content, the same root id
        assert list(trees.items(root)) == sorted((k, v) for k, v in model.items())
        expected = [
            (k, before.get(k), model.get(k))
            for k in sorted(before.keys() | model.keys())
            if before.get(k) != model.get(k)
        ]
        assert list(trees.diff(before_root, root)) == expected
        assert list(trees.diff(root, before_root)) == [(k, b, a) for k, a, b in expected]
        for key in list(changes)[:30]:
            assert trees.get(root, key) == model.get(key)
        start = rng.choice(sorted(model) or ["x"])
        assert [k for k, _ in trees.items(root, start, inclusive=False)] == [k for k in sorted(model) if k > start]
        assert [k for k, _ in trees.items(root, start)] == [k for k in sorted(model) if k >= start]
        assert list(trees.diff(before_root, root, start)) == [d for d in expected if d[0] >= start]


def test_deleting_everything_gives_the_empty_tree_and_adding_to_it_builds_again():
    trees = Trees(MemoryNodes())
    keys = [f"k{i:05d}" for i in range(5000)]
    root = trees.build((k, 1) for k in keys)
    assert trees.node(root).level >= 2
    assert trees.apply(root, [(k, None) for k in keys]) == EMPTY_TREE
    assert trees.apply(EMPTY_TREE, [("a", 1), ("b", None)]) == trees.build([("a", 1)])
    assert list(trees.items(EMPTY_TREE)) == [] and trees.get(EMPTY_TREE, "a") is None
    assert trees.apply(root, []) == root
    assert trees.apply(root, [("k00007", 1)]) == root  # a change to the same value changes nothing


def test_a_change_of_k_objects_writes_and_reads_about_k_paths_to_the_root():
    store = CountingNodes()
    trees = Trees(store, NodeCache(capacity=1))
    root = trees.build((f"images/{i // 1000:03d}/img-{i:07d}.png", ["a" * 64, i]) for i in range(200_000))
    height = trees.node(root).level
    assert height >= 3
    total = len(store.nodes)
    rng = random.Random(0)
    changes = sorted(
        (f"images/{rng.randrange(200):03d}/img-{rng.randrange(200_000):07d}.png", ["b" * 64, 1]) for _ in range(10)
    )
    store.reads = store.writes = 0
    new_root = trees.apply(root, changes)
    bound = 10 * (height + 1) * 3
    assert store.writes <= bound and store.reads <= bound, (store.reads, store.writes, total)
    store.reads = 0
    assert [k for k, _, _ in trees.diff(root, new_root)] == sorted({k for k, _ in changes})
    assert store.reads <= 2 * bound, store.reads
    seen: set = set()
    assert sum(1 for _ in trees.walk(root, seen)) == total
    assert len(seen) == total
    assert sum(1 for _ in trees.walk(new_root, seen)) == store.writes
    assert len(seen) - total == store.writes  # every node written is part of the new tree
