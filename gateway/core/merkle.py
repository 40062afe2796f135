"""The audit log as a Merkle tree (RFC 9162, section 2.1), beside the hash chain.

The leaves are the audit records in ``seq`` order; a leaf is SHA-256 over a
0x00 byte and the record's chain hash (32 raw bytes), an interior node
SHA-256 over 0x01 and its two children. A tree head (size and root) commits
to every record up to that size, so a signed head that names more records
than an export holds exposes a deleted tail, which the chain alone cannot.

``Tree`` keeps the hash of every complete, aligned subtree (about two hashes
per leaf, in flat byte arrays) so appending is O(1) amortised and a root or a
proof at any size costs O(log n) hashes. The ``verify_*`` functions follow the
RFC's verification algorithms and need nothing but the proof.

>>> tree = Tree()
>>> for record_hash in (b"a" * 32, b"b" * 32, b"c" * 32):
...     tree.append(leaf_hash(record_hash))
>>> proof = tree.inclusion(1, 3)
>>> verify_inclusion(tree.leaf(1), 1, 3, proof, tree.root(3))
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def record_leaf(chain_hash_hex: str) -> bytes:
    """The leaf of an audit record: its chain hash (hex text) as 32 raw bytes."""
    raw = bytes.fromhex(chain_hash_hex)
    if len(raw) != HASH_SIZE:
        raise ValueError("an audit record's hash must be 32 bytes (64 hex digits)")
    return leaf_hash(raw)


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


class Tree:
    """An append-only Merkle tree over leaf hashes."""

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self._levels: list[bytearray] = [bytearray()]
        for leaf in leaves:
            self.append(leaf)

    @property
    def size(self) -> int:
        return len(self._levels[0]) // HASH_SIZE

    def leaf(self, index: int) -> bytes:
        return self._get(0, index)

    def append(self, leaf: bytes) -> None:
        if len(leaf) != HASH_SIZE:
            raise ValueError("a leaf hash is 32 bytes")
        self._levels[0] += leaf
        level = 0
        while (len(self._levels[level]) // HASH_SIZE) % 2 == 0:  # a subtree just completed
            count = len(self._levels[level]) // HASH_SIZE
            parent = node_hash(self._get(level, count - 2), self._get(level, count - 1))
            if level + 1 == len(self._levels):
                self._levels.append(bytearray())
            self._levels[level + 1] += parent
            level += 1

    def truncate(self, size: int) -> None:
        """Forget the leaves from ``size`` on (the store holds fewer records than before)."""
        for level, hashes in enumerate(self._levels):
            del hashes[(size >> level) * HASH_SIZE:]

    def _get(self, level: int, index: int) -> bytes:
        start = index * HASH_SIZE
        return bytes(self._levels[level][start:start + HASH_SIZE])

    def _range(self, lo: int, hi: int) -> bytes:
        """MTH of the leaves [lo, hi); lo is always aligned to the subtrees it asks for."""
        width = hi - lo
        if width & (width - 1) == 0:  # a complete subtree: stored
            level = width.bit_length() - 1
            return self._get(level, lo >> level)
        k = _split(width)
        return node_hash(self._range(lo, lo + k), self._range(lo + k, hi))

    def _check(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise ValueError(f"tree size {size} is not between 0 and {self.size}")

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        self._check(size)
        return EMPTY_ROOT if size == 0 else self._range(0, size)

    def inclusion(self, index: int, size: int) -> list[bytes]:
        """The audit path of leaf ``index`` in the tree of ``size`` leaves (RFC 9162 2.1.3.1)."""
        self._check(size)
        if not 0 <= index < size:
            raise ValueError(f"leaf index {index} is not in a tree of size {size}")
        path: list[bytes] = []
        lo, hi = 0, size
        while hi - lo > 1:  # walk down from the root; siblings are collected bottom-up
            k = _split(hi - lo)
            if index < lo + k:
                path.append(self._range(lo + k, hi))
                hi = lo + k
            else:
                path.append(self._range(lo, lo + k))
                lo += k
        path.reverse()
        return path

    def consistency(self, old: int, new: int) -> list[bytes]:
        """The proof that the tree of ``old`` leaves is a prefix of ``new`` (RFC 9162 2.1.4.1)."""
        self._check(new)
        if not 0 <= old <= new:
            raise ValueError(f"old size {old} is not between 0 and {new}")
        if old in (0, new):
            return []
        path: list[bytes] = []
        lo, hi, m, complete = 0, new, old, True
        while m != hi - lo:
            k = _split(hi - lo)
            if m <= k:
                path.append(self._range(lo + k, hi))
                hi = lo + k
            else:
                path.append(self._range(lo, lo + k))
                lo, m, complete = lo + k, m - k, False
        if not complete:
            path.append(self._range(lo, hi))
        path.reverse()
        return path


def root_of(leaves: Sequence[bytes]) -> bytes:
    return Tree(leaves).root()


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes],
                     root: bytes) -> bool:
    """RFC 9162 2.1.3.2: does ``proof`` put ``leaf`` at ``index`` under ``root``?"""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """RFC 9162 2.1.4.2: is the tree of ``old`` leaves (``old_root``) a prefix of ``new``?"""
    if not 0 <= old <= new:
        return False
    if old == 0:
        return not proof
    if old == new:
        return not proof and old_root == new_root
    path = list(proof)
    if old & (old - 1) == 0:  # a power of two: the old root is itself a node of the new tree
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == old_root and sr == new_root
