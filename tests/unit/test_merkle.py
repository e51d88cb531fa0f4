"""RFC 9162 §2.1 hashing and proofs: published known answers, then properties.

The vectors are the RFC 6962 test tree used by Certificate Transparency and
Go's transparency-dev/merkle (testonly/constants.go, proof/verify_test.go):
eight leaves, the root of every prefix, and inclusion/consistency proofs.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledgergate.audit import merkle

H = bytes.fromhex
LEAVES = [H(x) for x in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                         "606162636465666768696a6b6c6d6e6f")]
ROOTS = [H(x) for x in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]
LEAF_HASHES = [H(x) for x in (
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
)]
# (leaf index, tree size, proof) — verify_test.go lists 1-based leaves; these are 0-based.
INCLUSION = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (0, 1, []),
]
CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]


def proof_tree(leaf_hashes: list[bytes], stride: int = 2) -> merkle.ProofTree:
    tree = merkle.ProofTree(lambda a, b: leaf_hashes[a:b], stride=stride)
    for h in leaf_hashes:
        tree.append(h)
    return tree


def test_leaf_hashes_known_answers() -> None:
    assert [merkle.leaf_hash(d) for d in LEAVES] == LEAF_HASHES


def test_roots_of_every_prefix() -> None:
    assert merkle.EMPTY_ROOT == ROOTS[0]
    cr = merkle.CompactRange()
    for n in range(1, 9):
        cr.append(LEAF_HASHES[n - 1])
        assert cr.root() == ROOTS[n], n
        assert merkle.naive_root(LEAF_HASHES[:n]) == ROOTS[n]
        assert merkle.root_of(LEAF_HASHES[:n]) == ROOTS[n]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_inclusion_known_answers(index: int, size: int, proof: list[str]) -> None:
    want = [H(p) for p in proof]
    assert proof_tree(LEAF_HASHES[:size]).inclusion_proof(index, size) == want
    assert proof_tree(LEAF_HASHES).inclusion_proof(index, size) == want  # from a bigger tree
    assert merkle.verify_inclusion(index, size, LEAF_HASHES[index], want, ROOTS[size])


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_consistency_known_answers(old: int, new: int, proof: list[str]) -> None:
    want = [H(p) for p in proof]
    assert proof_tree(LEAF_HASHES).consistency_proof(old, new) == want
    assert merkle.verify_consistency(old, new, ROOTS[old], ROOTS[new], want)


def _flip(p: bytes) -> bytes:
    return bytes([p[0] ^ 8]) + p[1:]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION[:4])
def test_corrupted_inclusion_proofs_fail(index: int, size: int, proof: list[str]) -> None:
    """The probes of transparency-dev/merkle's corruptInclusionProof."""
    p = [H(x) for x in proof]
    leaf, root = LEAF_HASHES[index], ROOTS[size]
    some = H("abacaba000000000000000000000000000000000000000000060061e00123456")
    bad = [
        (index - 1, size, leaf, p, root), (index + 1, size, leaf, p, root), (index ^ 2, size, leaf, p, root),
        (index, size * 2, leaf, p, root), (index, size // 2, leaf, p, root),
        (index, size, b"WrongLeaf", p, root), (index, size, leaf, p, ROOTS[0]), (index, size, leaf, p, some),
        (index, size, leaf, [*p, b""], root), (index, size, leaf, [*p, root], root),
        (index, size, leaf, [b"", *p], root), (index, size, leaf, [root, *p], root),
        (index, size, leaf, p[:-1], root),
    ]
    bad += [(index, size, leaf, p[:i] + [_flip(p[i])] + p[i + 1:], root) for i in range(len(p))]
    if len(p) > 1:
        bad.append((index, size, leaf, [p[0], some, *p[1:]], root))
    for probe in bad:
        assert not merkle.verify_inclusion(*probe), probe


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY[1:])
def test_corrupted_consistency_proofs_fail(old: int, new: int, proof: list[str]) -> None:
    p = [H(x) for x in proof]
    r1, r2 = ROOTS[old], ROOTS[new]
    bad = [
        (old - 1, new, r1, r2, p), (old + 1, new, r1, r2, p), (old ^ 2, new, r1, r2, p),
        (old, new * 2, r1, r2, p), (old, new // 2, r1, r2, p),
        (old, new, b"WrongRoot", r2, p), (old, new, r1, b"WrongRoot", p), (old, new, r2, r1, p),
        (old, new, r1, r2, []), (old, new, r1, r2, [*p, b""]), (old, new, r1, r2, [*p, r1]),
        (old, new, r1, r2, [*p, r2]), (old, new, r1, r2, [b"", *p]), (old, new, r1, r2, [r1, *p]),
        (old, new, r1, r2, [r2, *p]), (old, new, r1, r2, [p[0], *p]), (old, new, r1, r2, p[:-1]),
    ]
    bad += [(old, new, r1, r2, p[:i] + [bytes([p[i][0] ^ 16]) + p[i][1:]] + p[i + 1:]) for i in range(len(p))]
    for probe in bad:
        assert not merkle.verify_consistency(*probe), probe


def test_trivial_consistency() -> None:
    r1, r2 = b"don't care 1", b"don't care 2"
    assert merkle.verify_consistency(0, 0, r1, r1, [])
    assert merkle.verify_consistency(0, 1, r1, r2, [])
    assert merkle.verify_consistency(1, 1, r2, r2, [])
    assert not merkle.verify_consistency(1, 1, r1, r2, [])
    assert not merkle.verify_consistency(1, 0, r1, r2, [])
    assert not merkle.verify_consistency(2, 1, r1, r2, [])
    assert not merkle.verify_consistency(1, 2, r1, r2, [])
    assert not merkle.verify_consistency(1, 1, ROOTS[0], ROOTS[0], [ROOTS[0]])


# --- properties against a naive tree -----------------------------------------


def naive_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) by the RFC 9162 §2.1.3.1 recursion, verbatim."""
    n = len(leaves)
    if n <= 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return naive_path(m, leaves[:k]) + [merkle.naive_root(leaves[k:])]
    return naive_path(m - k, leaves[k:]) + [merkle.naive_root(leaves[:k])]


def naive_subproof(m: int, leaves: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) by the RFC 9162 §2.1.4.1 recursion, verbatim."""
    n = len(leaves)
    if m == n:
        return [] if b else [merkle.naive_root(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return naive_subproof(m, leaves[:k], b) + [merkle.naive_root(leaves[k:])]
    return naive_subproof(m - k, leaves[k:], False) + [merkle.naive_root(leaves[:k])]


def _leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1), st.integers(1, n))),
       st.integers(1, 5))
def test_inclusion_matches_naive_tree(args: tuple[int, int, int], stride: int) -> None:
    total, index, size = args
    index = min(index, size - 1)
    leaves = _leaves(total)
    tree = proof_tree(leaves, stride)
    proof = tree.inclusion_proof(index, size)
    assert proof == naive_path(index, leaves[:size])
    root = merkle.naive_root(leaves[:size])
    assert tree.root_at(size) == root
    assert merkle.verify_inclusion(index, size, leaves[index], proof, root)
    if proof:
        assert not merkle.verify_inclusion(index, size, leaves[index], proof[:-1], root)
        assert not merkle.verify_inclusion(index, size, hashlib.sha256(b"x").digest(), proof, root)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n), st.integers(1, n))),
       st.integers(1, 5))
def test_consistency_matches_naive_tree(args: tuple[int, int, int], stride: int) -> None:
    total, a, b = args
    old, new = min(a, b), max(a, b)
    leaves = _leaves(total)
    tree = proof_tree(leaves, stride)
    proof = tree.consistency_proof(old, new)
    assert proof == (naive_subproof(old, leaves[:new], True) if old < new else [])
    r1, r2 = merkle.naive_root(leaves[:old]), merkle.naive_root(leaves[:new])
    assert merkle.verify_consistency(old, new, r1, r2, proof)
    if old < new:
        other = merkle.naive_root(leaves[1:new + 1]) if new < total else hashlib.sha256(b"x").digest()
        assert not merkle.verify_consistency(old, new, r1, other, proof)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 600))
def test_compact_range_root_and_edge(n: int) -> None:
    leaves = _leaves(n)
    cr = merkle.CompactRange()
    for h in leaves:
        cr.append(h)
    assert cr.root() == merkle.naive_root(leaves)
    assert len(cr.edge) == bin(n).count("1")
    resumed = merkle.CompactRange(cr.size, cr.edge)
    resumed.append(merkle.leaf_hash(b"next"))
    assert resumed.root() == merkle.naive_root([*leaves, merkle.leaf_hash(b"next")])
