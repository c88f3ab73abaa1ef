"""Committed trees: sorted key -> value maps stored as content-addressed chunks that commits share.

A tree is a prolly tree (a B-tree whose node boundaries depend on the content only). Level 0 holds the items; an
item ends its node when ``hash(key, level)`` says so (see :func:`ends_node`; or it is the level's last item), and
each node becomes one item ``(last key, node id)`` of the level above, until a level fits one node: the root.
Node ids are the sha256 of the node's bytes, so:

- equal trees have equal root ids, however they were made (the root id is a tree's content hash);
- applying k changes to a tree of N items rewrites only the nodes on the k paths to the root (O(k log N) time
  and storage), since a change moves node boundaries only around itself;
- a diff skips every subtree whose id is the same on both sides (O(k log N) for k differences).

The module knows nothing of SQL or lakeFS: nodes go through a :class:`NodeStore` (``get``/``put`` of bytes).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol

EMPTY_TREE = ""
# node sizes (items): (smallest, mean, largest) of leaves, then of inner nodes. Past the smallest size a key closes
# its node with probability 1 / (mean - smallest): sizes spread little, and a random change lands in a node of
# about the mean size (with no smallest size it would land in one of twice the mean: sizes are size-biased).
LEAF_SIZES = (16, 32, 128)
INNER_SIZES = (8, 16, 64)


class NodeStore(Protocol):
    """Where node bytes live; ``put`` of an existing id is a no-op (ids are content hashes)."""

    def get(self, node_id: str) -> bytes: ...

    def put(self, node_id: str, data: bytes) -> None: ...


class MissingNode(LookupError):
    """A node id the store does not hold (a damaged or collected tree)."""


@dataclass(frozen=True)
class Node:
    level: int
    items: list  # [key, value] pairs; an inner node's value is a child node id


class NodeCache:
    """Decoded nodes by id, least recently used dropped first; safe to share (nodes are immutable)."""

    def __init__(self, capacity: int = 8192):
        self.capacity = capacity
        self._nodes: OrderedDict[str, Node] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, node_id: str) -> Node | None:
        with self._lock:
            node = self._nodes.get(node_id)
            if node is not None:
                self._nodes.move_to_end(node_id)
            return node

    def add(self, node_id: str, node: Node) -> None:
        with self._lock:
            self._nodes[node_id] = node
            if len(self._nodes) > self.capacity:
                self._nodes.popitem(last=False)


def ends_node(key: str, level: int, size: int) -> bool:
    """Whether ``key``, the ``size``-th item of its open node at ``level``, closes the node. It depends on the
    content only (read left to right), so equal contents make equal trees."""
    smallest, mean, largest = LEAF_SIZES if level == 0 else INNER_SIZES
    if size < smallest:
        return False
    if size >= largest:
        return True
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8, salt=bytes([level])).digest()
    return int.from_bytes(digest, "big") % (mean - smallest) == 0


def encode_node(node: Node) -> tuple[str, bytes]:
    """The node's id and its stored (compressed) bytes."""
    raw = json.dumps([node.level, node.items], separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )
    return hashlib.sha256(raw).hexdigest(), zlib.compress(raw, 6)


def decode_node(data: bytes) -> Node:
    level, items = json.loads(zlib.decompress(data).decode("utf-8", "surrogatepass"))
    return Node(level, items)


class Trees:
    """Operations on the trees of one node store. Keys are str; values any JSON value except None."""

    def __init__(self, store: NodeStore, cache: NodeCache | None = None):
        self.store = store
        self.cache = cache if cache is not None else NodeCache()

    # -- nodes -----------------------------------------------------------------------------------------------
    def node(self, node_id: str) -> Node:
        node = self.cache.get(node_id)
        if node is None:
            node = decode_node(self.store.get(node_id))
            self.cache.add(node_id, node)
        return node

    def _write(self, level: int, items: list) -> str:
        node = Node(level, items)
        node_id, data = encode_node(node)
        self.store.put(node_id, data)
        self.cache.add(node_id, node)
        return node_id

    # -- building --------------------------------------------------------------------------------------------
    def build(self, items: Iterable[tuple[str, object]], level: int = 0) -> str:
        """The root id of the tree holding ``items`` (sorted by key, keys unique) at ``level`` and above."""
        pending: list[list] = []  # pending[i]: the open node of level ``level + i``
        closed: list[list] = []  # closed[i]: ids of the nodes of level ``level + i`` written so far (at most 2)

        def close(depth: int) -> None:
            node_id = self._write(level + depth, pending[depth])
            closed[depth] = closed[depth][-1:] + [node_id]
            add(depth + 1, pending[depth][-1][0], node_id)
            pending[depth] = []

        def add(depth: int, key: str, value) -> None:
            while len(pending) <= depth:
                pending.append([])
                closed.append([])
            pending[depth].append([key, value])
            if ends_node(key, level + depth, len(pending[depth])):
                close(depth)

        for key, value in items:
            add(0, key, value)
        depth = 0
        while depth < len(pending):
            if pending[depth] and not closed[depth]:  # the whole level fits one node: the root
                return self._write(level + depth, pending[depth])
            if pending[depth]:
                close(depth)
            if len(closed[depth]) == 1:  # the level's only node closed on a boundary: it is the root
                return closed[depth][0]
            depth += 1
        return EMPTY_TREE

    # -- reading ---------------------------------------------------------------------------------------------
    def get(self, root: str, key: str):
        """The value of ``key`` in the tree, or None."""
        if root == EMPTY_TREE:
            return None
        node = self.node(root)
        while node.level > 0:
            index = bisect.bisect_left(node.items, key, key=_key)
            if index == len(node.items):
                return None
            node = self.node(node.items[index][1])
        index = bisect.bisect_left(node.items, key, key=_key)
        if index < len(node.items) and node.items[index][0] == key:
            return node.items[index][1]
        return None

    def items(self, root: str, start: str = "", inclusive: bool = True) -> Iterator[tuple[str, object]]:
        """Items in key order from ``start`` (included or not)."""
        stream = self._stream(root, start, inclusive)
        while stream:
            top = stream.pop()
            if len(top) == 3:
                self._expand(stream, top)
            else:
                yield top

    def diff(
        self, left: str, right: str, start: str = "", inclusive: bool = True
    ) -> Iterator[tuple[str, object, object]]:
        """``(key, left value, right value)`` for each key whose values differ (None: absent), in key order."""
        if left == right:
            return
        a, b = self._stream(left, start, inclusive), self._stream(right, start, inclusive)
        while a and b:
            x, y = a[-1], b[-1]
            if len(x) == 3 and len(y) == 3:
                if x[1] == y[1]:  # the same subtree on both sides
                    a.pop()
                    b.pop()
                elif x[2] >= y[2]:
                    self._expand(a, a.pop())
                else:
                    self._expand(b, b.pop())
            elif len(x) == 3:
                self._expand(a, a.pop())
            elif len(y) == 3:
                self._expand(b, b.pop())
            elif x[0] < y[0]:
                yield a.pop()[0], x[1], None
            elif y[0] < x[0]:
                yield b.pop()[0], None, y[1]
            else:
                a.pop()
                b.pop()
                if x[1] != y[1]:
                    yield x[0], x[1], y[1]
        for stream, side in ((a, 0), (b, 1)):
            while stream:
                top = stream.pop()
                if len(top) == 3:
                    self._expand(stream, top)
                else:
                    yield (top[0], top[1], None) if side == 0 else (top[0], None, top[1])

    def walk(self, root: str, seen: set[str]) -> Iterator[tuple[str, Node]]:
        """Each node of the tree not in ``seen`` (subtrees in it are skipped), adding it to ``seen``."""
        stack = [] if root == EMPTY_TREE else [root]
        while stack:
            node_id = stack.pop()
            if node_id in seen:
                continue
            seen.add(node_id)
            node = self.node(node_id)
            if node.level > 0:
                stack.extend(child for _, child in node.items if child not in seen)
            yield node_id, node

    def _stream(self, root: str, start: str, inclusive: bool) -> list:
        """A stack (next on top) of what follows ``start``: items ``(key, value)`` and unread subtrees
        ``(last key, node id, level)``."""
        if root == EMPTY_TREE:
            return []
        stack: list = []
        node = self.node(root)
        while node.level > 0:
            index = min(bisect.bisect_left(node.items, start, key=_key), len(node.items) - 1)
            stack.extend((key, child, node.level - 1) for key, child in reversed(node.items[index + 1 :]))
            node = self.node(node.items[index][1])
        find = bisect.bisect_left if inclusive else bisect.bisect_right
        stack.extend((key, value) for key, value in reversed(node.items[find(node.items, start, key=_key) :]))
        return stack

    def _expand(self, stack: list, subtree: tuple) -> None:
        node = self.node(subtree[1])
        if node.level > 0:
            stack.extend((key, child, node.level - 1) for key, child in reversed(node.items))
        else:
            stack.extend((key, value) for key, value in reversed(node.items))

    # -- changing --------------------------------------------------------------------------------------------
    def apply(self, root: str, changes: Iterable[tuple[str, object]]) -> str:
        """The root id of ``root``'s tree with ``changes`` (sorted by key, unique; value None: delete)."""
        changes = list(changes)
        if not changes:
            return root
        if root == EMPTY_TREE:
            return self.build((key, value) for key, value in changes if value is not None)
        height = self.node(root).level
        for level in range(height):
            changes = self._apply_level(root, level, changes)
            if not changes:
                return root
        chunks = self._rechunk_level(root, height, changes)
        if not chunks:
            return EMPTY_TREE
        if len(chunks) > 1:
            return self.build(chunks, height + 1)
        root = chunks[0][1]
        node = self.node(root)
        while node.level > 0 and len(node.items) == 1:  # a level of one node is the root: drop those above
            root = node.items[0][1]
            node = self.node(root)
        return root

    def _apply_level(self, root: str, level: int, changes: list) -> list:
        """Apply ``changes`` to the nodes of ``level``; returns the changes this makes to ``level + 1``
        (last key -> new node id, or None for a node that is gone)."""
        replaced, written = self._rewrite(root, level, changes)
        return [
            (key, written.get(key))
            for key in sorted(replaced.keys() | written.keys())
            if replaced.get(key) != written.get(key)
        ]

    def _rechunk_level(self, root: str, level: int, changes: list) -> list:
        """The new nodes of the root's level (the root holds the whole level) as ``[last key, id]``."""
        _, written = self._rewrite(root, level, changes)
        return [[key, written[key]] for key in sorted(written)]

    def _rewrite(self, root: str, level: int, changes: list) -> tuple[dict[str, str], dict[str, str]]:
        """Rewrite the nodes of ``level`` that ``changes`` touch: ``({last key: old id}, {last key: new id})``.

        Each run of rewritten nodes starts at the node holding the first change not yet applied and takes the next
        node while its rewritten items do not end on a node boundary (a removed boundary joins two nodes)."""
        replaced: dict[str, str] = {}
        written: dict[str, str] = {}
        position = 0
        while position < len(changes):
            open_items: list = []
            for node_id, node, is_last in self._level_nodes(root, level, changes[position][0]):
                last_key = node.items[-1][0]
                replaced[last_key] = node_id
                end = len(changes) if is_last else bisect.bisect_right(changes, last_key, lo=position, key=_key)
                for key, value in _merge_sorted(node.items, changes[position:end]):
                    open_items.append([key, value])
                    if ends_node(key, level, len(open_items)):
                        written[key] = self._write(level, open_items)
                        open_items = []
                position = end
                if not open_items:
                    break
                if is_last:
                    written[open_items[-1][0]] = self._write(level, open_items)
                    break
        return replaced, written

    def _level_nodes(self, root: str, level: int, key: str) -> Iterator[tuple[str, Node, bool]]:
        """``(id, node, is the level's last)`` for the nodes of ``level`` in key order, from the one that holds
        (or would hold) ``key``."""
        path: list[list] = []  # [inner node, index of the child on the path]
        node_id, node = root, self.node(root)
        while node.level > level:
            index = min(bisect.bisect_left(node.items, key, key=_key), len(node.items) - 1)
            path.append([node, index])
            node_id = node.items[index][1]
            node = self.node(node_id)
        while True:
            yield node_id, node, all(index == len(parent.items) - 1 for parent, index in path)
            while path and path[-1][1] == len(path[-1][0].items) - 1:
                path.pop()
            if not path:
                return
            path[-1][1] += 1
            node_id = path[-1][0].items[path[-1][1]][1]
            node = self.node(node_id)
            while node.level > level:
                path.append([node, 0])
                node_id = node.items[0][1]
                node = self.node(node_id)


def _key(item) -> str:
    return item[0]


def _merge_sorted(items: list, changes: list) -> Iterator[tuple[str, object]]:
    """``items`` with ``changes`` applied (both sorted by key; a change's None value deletes)."""
    i = j = 0
    while i < len(items) or j < len(changes):
        if j == len(changes) or (i < len(items) and items[i][0] < changes[j][0]):
            yield items[i][0], items[i][1]
            i += 1
            continue
        key, value = changes[j]
        if i < len(items) and items[i][0] == key:
            i += 1
        if value is not None:
            yield key, value
        j += 1


class MemoryNodes:
    """A :class:`NodeStore` in a dict (tests and tools)."""

    def __init__(self):
        self.nodes: dict[str, bytes] = {}

    def get(self, node_id: str) -> bytes:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise MissingNode(node_id) from None

    def put(self, node_id: str, data: bytes) -> None:
        self.nodes.setdefault(node_id, data)
