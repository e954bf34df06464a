"""A source partition's folder is published as one unit: after a SIGKILL at any moment it is
the old version or the new one as a whole (every file matching manifest.json), and what a
crashed run left behind is cleaned by the next run."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from specforge_assets.fileio import clean_stale_staging, exchange_paths, staged_dir


def _rows(tag: str, n: int) -> str:
    return "".join(
        json.dumps(
            {
                "id": f"{tag}-{i}",
                "conversations": [
                    {"role": "user", "content": f"q {i} {tag}"},
                    {"role": "assistant", "content": f"a {i} {tag}"},
                ],
            }
        )
        + "\n"
        for i in range(n)
    )


def _consistent(d) -> str:
    """'v1' / 'v2' when the folder is one version whole; raises otherwise."""
    man = json.loads((d / "manifest.json").read_text())
    for name, meta in man["files"].items():
        assert hashlib.sha256((d / name).read_bytes()).hexdigest() == meta["sha256"], f"{name} differs from manifest"
    versions = {
        json.loads(line)["id"].split("-")[0]
        for n in ("train.jsonl", "test.jsonl")
        for line in (d / n).read_text().splitlines()
    }
    assert len(versions) == 1, versions
    return versions.pop()


BUILD = textwrap.dedent("""
    import sys
    from specforge_assets.sources.config import resolve_source
    from specforge_assets.sources.normalize import build_source
    root, path = sys.argv[1], sys.argv[2]
    cfg = {"sources": {"p": {"format": "auto", "data_path": path, "split_eval": True}}}
    build_source(resolve_source("p", cfg, root), root, config=cfg)
""")


def test_sigkill_at_every_moment_leaves_old_or_new_whole(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    for tag in ("v1", "v2"):
        (tmp_path / f"{tag}.jsonl").write_text(_rows(tag, 20_000))
    script = tmp_path / "build.py"
    script.write_text(BUILD)
    env = {**os.environ, "SPECFORGE_DATA_ROOT": str(root)}
    subprocess.run([sys.executable, str(script), str(root), str(tmp_path / "v1.jsonl")], check=True, env=env)
    part = root / "sources" / "p"
    assert _consistent(part) == "v1"
    # Kill the rebuild at a spread of moments (before, during and right around the publish).
    t0 = time.monotonic()
    full = subprocess.run([sys.executable, str(script), str(root), str(tmp_path / "v1.jsonl")], env=env)
    took = time.monotonic() - t0
    assert full.returncode == 0
    seen, killed = set(), 0
    current = "v1"
    for frac in (0.3, 0.6, 0.8, 0.9, 0.95, 1.0, 1.05, 1.2):
        nxt = "v2" if current == "v1" else "v1"
        p = subprocess.Popen(
            [sys.executable, str(script), str(root), str(tmp_path / f"{nxt}.jsonl")], env=env, start_new_session=True
        )
        time.sleep(took * frac)
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            killed += 1
        p.wait()
        got = _consistent(part)  # never a mix, whatever the moment
        assert got in (current, nxt)
        seen.add(got)
        current = got
    assert killed >= 3  # the kills did land mid-run
    # the next uninterrupted run cleans every leftover and publishes
    subprocess.run([sys.executable, str(script), str(root), str(tmp_path / "v2.jsonl")], check=True, env=env)
    assert _consistent(part) == "v2"
    assert [n for n in os.listdir(part.parent) if n.startswith(".")] == []


def test_publish_is_an_exchange_and_stale_staging_is_removed(tmp_path):
    dst = tmp_path / "p"
    with staged_dir(dst) as t:
        (t / "a").write_text("v1")
    with staged_dir(dst) as t:
        (t / "a").write_text("v2")
    assert (dst / "a").read_text() == "v2"
    if not exchange_paths(tmp_path / "p", tmp_path / "p"):
        pytest.skip("this kernel / file system has no renameat2(RENAME_EXCHANGE); the two-rename fallback is used")
    # leftovers of crashed runs (their pids are gone): removed; a live pid's staging is kept
    dead = 2**22 + 12345
    (tmp_path / f".p.stage-{dead}-x").mkdir()
    (tmp_path / f".p.stage-{os.getppid()}-y").mkdir()
    assert clean_stale_staging(dst) == [f".p.stage-{dead}-x"]
    assert (tmp_path / f".p.stage-{os.getppid()}-y").exists()


def test_crash_between_two_renames_is_repaired(tmp_path):
    """The fallback's window (old renamed aside, new not yet in place): the next run restores."""
    dst = tmp_path / "p"
    old = tmp_path / f".p.old-{2**22 + 7}"
    old.mkdir()
    (old / "a").write_text("old")
    assert clean_stale_staging(dst) == [f"restored {old.name}"]
    assert (dst / "a").read_text() == "old"
