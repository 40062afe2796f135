"""core.merkle against an independent, naive RFC 9162 2.1 and the RFC 6962 test vectors.

The second implementation below is the RFC's recursive definitions written out
literally (MTH, PATH, PROOF/SUBPROOF over lists), with nothing shared with the
module under test but SHA-256. The published vectors are those of the
certificate-transparency test suites (also used by Go's tlog tests).
"""

from __future__ import annotations

import hashlib

import pytest

from gateway.core.merkle import (
    EMPTY_ROOT,
    Tree,
    leaf_hash,
    record_leaf,
    verify_consistency,
    verify_inclusion,
)


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def naive_mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + d[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _h(b"\x01" + naive_mth(d[:k]) + naive_mth(d[k:]))


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def naive_path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return naive_path(m, d[:k]) + [naive_mth(d[k:])]
    return naive_path(m - k, d[k:]) + [naive_mth(d[:k])]


def naive_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [naive_mth(d)]
    k = _k(n)
    if m <= k:
        return naive_subproof(m, d[:k], b) + [naive_mth(d[k:])]
    return naive_subproof(m - k, d[k:], False) + [naive_mth(d[:k])]


def naive_proof(m: int, d: list[bytes]) -> list[bytes]:
    return naive_subproof(m, d, True) if 0 < m < len(d) else []


LEAVES = [bytes.fromhex(x) for x in ("", "00", "10", "2021", "3031", "40414243",
                                     "5051525354555657", "606162636465666768696a6b6c6d6e6f")]
ROOTS = [bytes.fromhex(x) for x in (
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")]


def _tree(data: list[bytes]) -> Tree:
    return Tree(leaf_hash(d) for d in data)


def test_published_roots() -> None:
    tree = _tree(LEAVES)
    assert tree.root(0) == EMPTY_ROOT == naive_mth([])
    for size in range(1, 9):
        assert tree.root(size) == ROOTS[size - 1] == naive_mth(LEAVES[:size])


def test_published_inclusion_and_consistency_proofs() -> None:
    tree = _tree(LEAVES)
    inclusion = [bytes.fromhex(x) for x in (
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]
    assert tree.inclusion(5, 8) == inclusion
    assert verify_inclusion(leaf_hash(LEAVES[5]), 5, 8, inclusion, ROOTS[7])
    assert not verify_inclusion(leaf_hash(LEAVES[5]), 4, 8, inclusion, ROOTS[7])
    consistency = [bytes.fromhex(x) for x in (
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]
    assert tree.consistency(6, 8) == consistency
    assert verify_consistency(6, 8, ROOTS[5], ROOTS[7], consistency)
    assert not verify_consistency(6, 8, ROOTS[4], ROOTS[7], consistency)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 8, 9, 13, 16, 17, 31, 33])
def test_every_proof_agrees_with_the_naive_definitions_and_verifies(size: int) -> None:
    data = [hashlib.sha256(str(i).encode()).digest() for i in range(size)]
    tree = _tree(data)
    for n in range(1, size + 1):
        root = naive_mth(data[:n])
        assert tree.root(n) == root
        for m in range(n):
            proof = tree.inclusion(m, n)
            assert proof == naive_path(m, data[:n])
            assert verify_inclusion(leaf_hash(data[m]), m, n, proof, root)
            assert not verify_inclusion(leaf_hash(data[m] + b"x"), m, n, proof, root)
            if proof:
                bent = [proof[0][:-1] + bytes([proof[0][-1] ^ 1])] + proof[1:]
                assert not verify_inclusion(leaf_hash(data[m]), m, n, bent, root)
        for m in range(0, n + 1):
            proof = tree.consistency(m, n)
            assert proof == naive_proof(m, data[:n])
            old = naive_mth(data[:m])
            assert verify_consistency(m, n, old, root, proof)
            if 0 < m < n:
                assert not verify_consistency(m, n, naive_mth(data[1:m + 1]), root, proof)
                assert not verify_consistency(m, n, old, naive_mth(data[1:n + 1]), proof)


def test_truncate_forgets_a_tail_exactly() -> None:
    data = [bytes([i]) * 32 for i in range(21)]
    tree = _tree(data)
    tree.truncate(13)
    assert tree.size == 13 and tree.root() == naive_mth(data[:13])
    tree.append(leaf_hash(b"other"))
    assert tree.root() == naive_mth(data[:13] + [b"other"])


def test_a_record_leaf_is_its_chain_hash_as_raw_bytes() -> None:
    assert record_leaf("ab" * 32) == _h(b"\x00" + bytes.fromhex("ab" * 32))
    with pytest.raises(ValueError):
        record_leaf("ab" * 31)


def test_sizes_out_of_range_are_refused() -> None:
    tree = _tree(LEAVES[:3])
    for call in (lambda: tree.root(4), lambda: tree.inclusion(3, 3),
                 lambda: tree.consistency(2, 4), lambda: tree.consistency(3, 2)):
        with pytest.raises(ValueError):
            call()
    assert not verify_inclusion(leaf_hash(LEAVES[0]), 3, 3, [], ROOTS[2])
    assert not verify_consistency(3, 2, ROOTS[2], ROOTS[1], [])
    assert not verify_consistency(2, 2, ROOTS[1], ROOTS[0], [])
