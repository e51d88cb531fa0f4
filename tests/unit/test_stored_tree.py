"""Proofs and roots from stored interior hashes (merkle.StoredTree), checked against the RFC
9162 §2.1 recursion (merkle.naive_root) and the RFC's verification algorithms, with the
stored hashes produced the way the ledger writer produces them (CompactRange + StoredNodes)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledgergate.audit import merkle


def build(n: int) -> tuple[list[bytes], dict[tuple[int, int], bytes], merkle.CompactRange]:
    leaves = [merkle.leaf_hash(b"record %d" % i) for i in range(n)]
    hook = merkle.StoredNodes()
    cr = merkle.CompactRange(on_node=hook)
    for h in leaves:
        cr.append(h)
    return leaves, {(lv, ix): h for lv, ix, h in hook.nodes}, cr


class Reader:
    """What the store answers: leaf hashes at level 0, stored hashes at stored levels; counts reads."""

    def __init__(self, leaves: list[bytes], nodes: dict[tuple[int, int], bytes]) -> None:
        self.leaves, self.nodes, self.reads, self.hashes = leaves, nodes, 0, 0

    def __call__(self, level: int, indices: Sequence[int]) -> dict[int, bytes]:
        assert level == 0 or merkle.is_stored_level(level), f"read of unstored level {level}"
        self.reads += 1
        self.hashes += len(indices)
        if level == 0:
            return {i: self.leaves[i] for i in indices if i < len(self.leaves)}
        return {i: self.nodes[(level, i)] for i in indices if (level, i) in self.nodes}


def test_writer_stores_exactly_the_stored_levels() -> None:
    leaves, nodes, _ = build(1000)
    for level in range(1, 11):
        want = 1000 >> level if merkle.is_stored_level(level) else 0
        got = sorted(ix for lv, ix in nodes if lv == level)
        assert got == list(range(want))
        for ix in got:
            assert nodes[(level, ix)] == merkle.naive_root(leaves[ix << level:(ix + 1) << level])


@pytest.mark.parametrize("n", [1, 2, 15, 16, 17, 255, 256, 257, 1000, 4097])
def test_compact_range_and_roots_from_stored_hashes(n: int) -> None:
    leaves, nodes, cr = build(n)
    tree = merkle.StoredTree(Reader(leaves, nodes))
    got = tree.compact_range(n)
    assert got.size == n and got.edge == cr.edge and got.root() == merkle.naive_root(leaves)
    for size in {1, n // 3 + 1, n // 2 + 1, n}:
        assert tree.root_at(size) == merkle.naive_root(leaves[:size])
    assert tree.root_at(0) == merkle.EMPTY_ROOT


def test_open_reads_a_logarithmic_number_of_hashes() -> None:
    n = (1 << 20) - 1  # every bit set: the worst case for a compact range
    reader = Reader([b"\0" * 32] * n, {})
    reader.nodes = _FakeNodes()  # every stored level answers; only the count matters here
    merkle.StoredTree(reader).compact_range(n)
    # 20 edge subtrees, each at most 2^(STRIDE-1) stored hashes, one read per stored level used
    assert reader.hashes <= 20 * (1 << (merkle.STRIDE - 1)) and reader.reads <= 20 // merkle.STRIDE + 1


class _FakeNodes(dict):  # type: ignore[type-arg]
    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: object) -> bytes:
        return b"\1" * 32


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 600), st.data())
def test_proofs_from_stored_hashes_verify(n: int, data: st.DataObject) -> None:
    leaves, nodes, _ = build(n)
    tree = merkle.StoredTree(Reader(leaves, nodes))
    size = data.draw(st.integers(1, n))
    index = data.draw(st.integers(0, size - 1))
    root = merkle.naive_root(leaves[:size])
    proof = tree.inclusion_proof(index, size)
    assert merkle.verify_inclusion(index, size, leaves[index], proof, root)
    old = data.draw(st.integers(1, size))
    proof = tree.consistency_proof(old, size)
    assert merkle.verify_consistency(old, size, merkle.naive_root(leaves[:old]), root, proof)


def test_missing_stored_hash_is_a_lookup_error_not_a_wrong_answer() -> None:
    leaves, nodes, _ = build(300)
    del nodes[(4, 3)]
    tree = merkle.StoredTree(Reader(leaves, nodes))
    with pytest.raises(LookupError, match="level 4 index 3"):
        tree.inclusion_proof(0, 300)


def test_altered_stored_hash_changes_the_answer() -> None:
    """Proofs come from the stored hashes, not from the leaves: alter one and the proof breaks."""
    leaves, nodes, _ = build(300)
    root = merkle.naive_root(leaves)
    nodes[(4, 3)] = b"\x55" * 32  # records 48..63
    tree = merkle.StoredTree(Reader(leaves, nodes))
    assert not merkle.verify_inclusion(0, 300, leaves[0], tree.inclusion_proof(0, 300), root)
    # record 100's path holds the level-6 subtree 0..63, folded from the altered hash
    assert not merkle.verify_inclusion(100, 300, leaves[100], tree.inclusion_proof(100, 300), root)
    # record 290's path holds MTH(0..255), read as one stored level-8 hash (intact), not
    # refolded from level 4: its proof still verifies
    assert merkle.verify_inclusion(290, 300, leaves[290], tree.inclusion_proof(290, 300), root)
    assert tree.root_at(64) != merkle.naive_root(leaves[:64])


def test_read_many_answers_a_proof_in_one_read() -> None:
    leaves, nodes, _ = build(5000)
    reader = Reader(leaves, nodes)
    calls: list[dict[int, list[int]]] = []

    def read_many(wants):  # type: ignore[no-untyped-def]
        calls.append({lv: list(ix) for lv, ix in wants.items()})
        return {lv: reader(lv, ix) for lv, ix in wants.items()}

    tree = merkle.StoredTree(reader, read_many)
    root = merkle.naive_root(leaves[:4321])
    proof = tree.inclusion_proof(1234, 4321)
    assert merkle.verify_inclusion(1234, 4321, leaves[1234], proof, root) and len(calls) == 1
    assert len(calls[0]) > 1  # several stored levels, one read
    assert tree.compact_range(5000).root() == merkle.naive_root(leaves) and len(calls) == 2
