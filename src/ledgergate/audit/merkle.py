"""Merkle tree hashing and proofs exactly as RFC 9162 §2.1 (same as RFC 6962 §2.1).

Pure: no I/O, no clocks. Everything here is a function of hashes and sizes, so
the same code serves the ledger writer, the REST proofs, `verify` and
`verify-bundle`, and the known-answer tests pin it to the published vectors.

A range `(start, end)` names the Merkle Tree Hash of D[start:end]. Proof paths
are first computed as ranges (RFC 9162 §2.1.3.1 and §2.1.4.1), then a
`NodeSource` turns ranges into hashes; that split lets a log answer proofs
without holding every node in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence

HASH_SIZE = 32
_sha256 = hashlib.sha256

#: MTH({}) = SHA-256() — RFC 9162 §2.1.1.
EMPTY_ROOT = _sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """MTH({d(0)}) = SHA-256(0x00 || d(0)) — RFC 9162 §2.1.1."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || MTH(left) || MTH(right)) — RFC 9162 §2.1.1."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """k, the largest power of two smaller than n (n > 1) — RFC 9162 §2.1.1."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf hashes, computed with a compact range (O(n), no recursion)."""
    cr = CompactRange()
    for h in leaf_hashes:
        cr.append(h)
    return cr.root()


# --- proof shapes as ranges -------------------------------------------------


def inclusion_path(index: int, size: int) -> list[tuple[int, int]]:
    """Ranges whose hashes form PATH(m, D[n]), leaf to root — RFC 9162 §2.1.3.1."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    out: list[tuple[int, int]] = []
    start, end, m = 0, size, index
    # Walk down from the root; each step contributes the sibling range. Collected
    # root-first, so reverse at the end (the RFC lists the path leaf-first).
    while end - start > 1:
        k = _split(end - start)
        if m < k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start, m = start + k, m - k
    out.reverse()
    return out


def consistency_path(old: int, new: int) -> list[tuple[int, int]]:
    """Ranges whose hashes form PROOF(m, D[n]) = SUBPROOF(m, D[n], true) — RFC 9162 §2.1.4.1."""
    if not 0 <= old <= new:
        raise ValueError(f"no consistency proof from size {old} to size {new}")
    if old == 0 or old == new:
        return []
    out: list[tuple[int, int]] = []
    start, end, m, b = 0, new, old, True
    while True:
        n = end - start
        if m == n:
            if not b:
                out.append((start, end))
            break
        k = _split(n)
        if m <= k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start, m, b = start + k, m - k, False
    out.reverse()
    return out


# --- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) --------------------------


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root implied by an inclusion proof, or ValueError — RFC 9162 §2.1.3.2 steps 1-5."""
    if not 0 <= index < size:
        raise ValueError("leaf index out of range")
    if len(leaf) != HASH_SIZE or any(len(p) != HASH_SIZE for p in proof):
        raise ValueError("wrong hash size")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ValueError("proof too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError("proof too short")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> bool:
    try:
        return root_from_inclusion_proof(index, size, leaf, proof) == root
    except ValueError:
        return False


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2: does `proof` show tree `new` extends tree `old`?"""
    if not 0 <= old <= new:
        return False
    if any(len(p) != HASH_SIZE for p in proof):
        return False
    if old == new:
        return not proof and old_root == new_root
    if old == 0:
        return not proof  # the empty tree is a prefix of every tree
    path = list(proof)
    if old & (old - 1) == 0:  # step 1: old is an exact power of two
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old - 1, new - 1
    while fn & 1:  # step 3
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


# --- incremental state --------------------------------------------------------


class CompactRange:
    """The right edge of the tree: one hash per set bit of `size`, largest subtree first.

    Appending costs amortised O(1) hashes and the root is a fold over at most
    log2(n) hashes, so the writer never recomputes the tree (RFC 9162 §2.1.1's
    MTH, evaluated incrementally). `on_node(level, index, hash)` sees every
    perfect subtree as it completes; `ProofTree` keeps the ones it needs.
    """

    __slots__ = ("size", "edge", "on_node")

    def __init__(self, size: int = 0, edge: Iterable[bytes] = (),
                 on_node: Callable[[int, int, bytes], None] | None = None) -> None:
        self.size = size
        self.edge = list(edge)
        self.on_node = on_node
        if len(self.edge) != bin(size).count("1"):
            raise ValueError("a compact range holds one hash per set bit of its size")

    def append(self, leaf: bytes) -> None:
        index, h, level, s = self.size, leaf, 0, self.size
        edge, hook = self.edge, self.on_node
        while s & 1:
            h = node_hash(edge.pop(), h)
            level += 1
            s >>= 1
            if hook is not None:
                hook(level, index >> level, h)
        edge.append(h)
        self.size = index + 1

    def root(self) -> bytes:
        if not self.edge:
            return EMPTY_ROOT
        r = self.edge[-1]
        for h in reversed(self.edge[:-1]):
            r = node_hash(h, r)
        return r

    def copy(self) -> CompactRange:
        return CompactRange(self.size, self.edge)


def edge_sizes(size: int) -> list[int]:
    """Sizes of the perfect subtrees on the right edge of a tree of `size`, largest first."""
    return [1 << b for b in range(size.bit_length() - 1, -1, -1) if size >> b & 1]


LeafFetcher = Callable[[int, int], Sequence[bytes]]


class ProofTree:
    """Answers inclusion and consistency proofs for any size up to `size`.

    Keeping every node of a big log in memory costs 64 bytes a leaf; instead we
    keep perfect subtree hashes only at levels that are multiples of `stride`
    (about 32/(2^stride - 1) bytes a leaf) and fetch the few leaf hashes below
    the lowest kept level from storage through `fetch(start, end)`. A proof then
    needs at most log2(n) · 2^stride hashes and a couple of fetches.
    """

    def __init__(self, fetch: LeafFetcher, stride: int = 4) -> None:
        self.fetch = fetch
        self.stride = stride
        self.levels: dict[int, bytearray] = {}
        self.range = CompactRange(on_node=self._keep)

    @property
    def size(self) -> int:
        return self.range.size

    def _keep(self, level: int, index: int, h: bytes) -> None:
        if level % self.stride == 0:
            buf = self.levels.setdefault(level, bytearray())
            if len(buf) != index * HASH_SIZE:
                raise AssertionError("subtree hashes must arrive in order")
            buf += h

    def append(self, leaf: bytes) -> None:
        self.range.append(leaf)

    def root(self) -> bytes:
        return self.range.root()

    # Hash of the perfect subtree at (level, index), i.e. MTH(D[index·2^level : (index+1)·2^level]).
    def _perfect(self, level: int, index: int, leaves: dict[int, Sequence[bytes]]) -> bytes:
        base = (level // self.stride) * self.stride
        width = 1 << (level - base)
        first = index << (level - base)
        if base == 0:
            hashes = self._leaves(first, first + width, leaves)
        else:
            buf = self.levels[base]
            hashes = [bytes(buf[i * HASH_SIZE:(i + 1) * HASH_SIZE]) for i in range(first, first + width)]
        while len(hashes) > 1:
            hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
        return hashes[0]

    def _leaves(self, start: int, end: int, memo: dict[int, Sequence[bytes]]) -> list[bytes]:
        """Leaf hashes [start, end), fetched a whole aligned block at a time."""
        block = 1 << self.stride
        out: list[bytes] = []
        for b in range(start // block, (end - 1) // block + 1):
            if b not in memo:
                lo = b * block
                memo[b] = self.fetch(lo, min(lo + block, self.size))
            lo = b * block
            got = memo[b]
            out.extend(got[max(start, lo) - lo:min(end, lo + block) - lo])
        if len(out) != end - start:
            raise LookupError(f"storage returned {len(out)} leaf hashes for [{start}, {end})")
        return out

    def range_hash(self, start: int, end: int, memo: dict[int, Sequence[bytes]] | None = None) -> bytes:
        """MTH(D[start:end]) where `start` is aligned to the largest power of two below 2·(end-start)."""
        if end > self.size or start >= end:
            raise ValueError(f"range [{start}, {end}) is not inside a tree of size {self.size}")
        memo = {} if memo is None else memo
        parts: list[bytes] = []
        pos = start
        for width in edge_sizes(end - start):
            level = width.bit_length() - 1
            if pos % width:
                raise ValueError("range is not aligned to a subtree")
            parts.append(self._perfect(level, pos >> level, memo))
            pos += width
        r = parts[-1]
        for h in reversed(parts[:-1]):
            r = node_hash(h, r)
        return r

    def root_at(self, size: int) -> bytes:
        return EMPTY_ROOT if size == 0 else self.range_hash(0, size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        memo: dict[int, Sequence[bytes]] = {}
        return [self.range_hash(a, b, memo) for a, b in inclusion_path(index, size)]

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        memo: dict[int, Sequence[bytes]] = {}
        return [self.range_hash(a, b, memo) for a, b in consistency_path(old, new)]


def naive_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH by the RFC 9162 §2.1.1 recursion, verbatim; for tests and tiny trees only."""
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = _split(n)
    return node_hash(naive_root(leaf_hashes[:k]), naive_root(leaf_hashes[k:]))


# --- stored interior hashes ---------------------------------------------------

#: The ledger stores MTH of every perfect subtree whose level is a multiple of
#: STRIDE (level 0, the leaf hashes, lives beside the records). Any other
#: perfect subtree hash is a fold over at most 2^(STRIDE-1) stored hashes of the
#: stored level below it, so a proof or a root never needs more than that many
#: hashes per element, and the store holds about n/15 interior hashes, not 2n
#: as every level would (Go's sumdb/tlog "stored hashes" keep every level).
#: Every C2SP tlog-tiles level (tree level 8·L) is a stored level.
STRIDE = 4

#: (level, indices) -> {index: MTH of the perfect subtree at (level, index)} for
#: level 0 (leaf hashes) or a stored level; absent indices are simply missing.
NodeReader = Callable[[int, Sequence[int]], Mapping[int, bytes]]
#: {level: indices} -> {level: {index: hash}}: every level in one read (one round trip to a server)
NodesReader = Callable[[Mapping[int, Sequence[int]]], Mapping[int, Mapping[int, bytes]]]


def is_stored_level(level: int) -> bool:
    return level > 0 and level % STRIDE == 0


def subtrees(start: int, end: int) -> list[tuple[int, int]]:
    """(level, index) of the perfect subtrees that make up D[start:end], left to right.

    The range must be aligned as RFC 9162 §2.1.1's split produces it (every
    proof range and every prefix [0, n) is): its hash is then the right fold
    of these subtrees' hashes."""
    if not 0 <= start < end:
        raise ValueError(f"range [{start}, {end}) is empty or negative")
    out: list[tuple[int, int]] = []
    pos = start
    for width in edge_sizes(end - start):
        level = width.bit_length() - 1
        if pos % width:
            raise ValueError(f"range [{start}, {end}) is not aligned to a subtree")
        out.append((level, pos >> level))
        pos += width
    return out


def edge_nodes(size: int) -> list[tuple[int, int]]:
    """(level, index) of the compact range at `size`: its right edge, largest subtree first."""
    return subtrees(0, size) if size else []


class StoredTree:
    """Roots, compact ranges and proofs of any size, from stored hashes only.

    Nothing is held in memory and nothing is replayed: each answer plans the
    perfect subtrees it needs (RFC 9162 §2.1.3.1 / §2.1.4.1 ranges, split as
    `subtrees`), reads their stored hashes with one `read` per stored level,
    and folds. A subtree at level k costs 2^(k mod STRIDE) stored hashes.
    """

    def __init__(self, read: NodeReader, read_many: NodesReader | None = None) -> None:
        self.read = read
        self.read_many = read_many

    def perfect_hashes(self, nodes: Sequence[tuple[int, int]]) -> list[bytes]:
        want: dict[int, set[int]] = {}
        for level, index in nodes:
            shift = level % STRIDE
            want.setdefault(level - shift, set()).update(range(index << shift, (index + 1) << shift))
        if self.read_many is not None:
            got = self.read_many({base: sorted(ix) for base, ix in want.items()})
        else:
            got = {base: self.read(base, sorted(ix)) for base, ix in want.items()}
        out: list[bytes] = []
        for level, index in nodes:
            shift = level % STRIDE
            have = got[level - shift]
            try:
                hs = [have[i] for i in range(index << shift, (index + 1) << shift)]
            except KeyError as exc:
                raise LookupError(f"stored hash at level {level - shift} index {exc.args[0]} is missing") from None
            while len(hs) > 1:
                hs = [node_hash(hs[i], hs[i + 1]) for i in range(0, len(hs), 2)]
            out.append(hs[0])
        return out

    def range_hashes(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """MTH(D[a:b]) for each aligned range, with one read per stored level for all of them."""
        plans = [subtrees(a, b) for a, b in ranges]
        flat = self.perfect_hashes([n for p in plans for n in p])
        out: list[bytes] = []
        k = 0
        for p in plans:
            parts = flat[k:k + len(p)]
            k += len(p)
            r = parts[-1]
            for h in reversed(parts[:-1]):
                r = node_hash(h, r)
            out.append(r)
        return out

    def root_at(self, size: int) -> bytes:
        return EMPTY_ROOT if size == 0 else self.range_hashes([(0, size)])[0]

    def compact_range(self, size: int) -> CompactRange:
        """The writer's state at `size`: popcount(size) subtree hashes, O(log n) reads."""
        return CompactRange(size, self.perfect_hashes(edge_nodes(size)))

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return self.range_hashes(inclusion_path(index, size))

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        return self.range_hashes(consistency_path(old, new))


class StoredNodes:
    """The `on_node` hook of a writer's CompactRange: keeps the hashes to store, (level, index, hash)."""

    __slots__ = ("nodes",)

    def __init__(self) -> None:
        self.nodes: list[tuple[int, int, bytes]] = []

    def __call__(self, level: int, index: int, h: bytes) -> None:
        if level % STRIDE == 0:
            self.nodes.append((level, index, h))
