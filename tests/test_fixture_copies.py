"""The golden files are copied into tests/fixtures so a plain clone can run the parity tests.
Where ../shared is present (developers' checkouts, CI), the copies must still equal the
originals: a regenerated golden file upstream then fails here instead of going unnoticed."""

from __future__ import annotations

import hashlib

import pytest

COPIES = [
    ("data/presets", ("sources", "presets")),
    ("data/parity", ("tokenize", "parity")),
]


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("shared_rel, copy_dir", COPIES, ids=[c[0] for c in COPIES])
def test_fixture_copies_match_shared_originals(shared_rel, copy_dir, shared, fixtures_dir):
    original = shared(*shared_rel.split("/"))
    copy_dir = fixtures_dir.joinpath(*copy_dir)
    files = sorted(p for p in original.rglob("*") if p.is_file())
    assert files, f"{original} is empty"
    for src in files:
        rel = src.relative_to(original)
        dst = copy_dir / rel
        assert dst.exists(), f"{rel} is missing from {copy_dir}"
        assert _digest(dst) == _digest(src), f"{dst} differs from {src}"
