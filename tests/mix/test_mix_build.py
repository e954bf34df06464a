"""Mix: weights/caps, dedup (exact + near), seeded split, quarantine reconciliation, checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specforge_assets.checks import mix as checks
from specforge_assets.mix.mix import build_mix, mix_config


def conv(i: int, text: str | None = None) -> dict:
    return {
        "id": f"c{i}",
        "conversations": [
            {"role": "user", "content": text or f"question number {i}"},
            {"role": "assistant", "content": f"answer {i}"},
        ],
    }


def write(root: Path, layer: str, key: str, rows: list, extra_lines: list[str] = ()) -> None:
    d = root / layer / key
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "train.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        for l in extra_lines:
            f.write(l + "\n")


def read(p: Path) -> list[dict]:
    return [json.loads(l) for l in open(p)]


def test_weights_dedup_split_quarantine(tmp_path):
    root = tmp_path
    a = [conv(i) for i in range(300)]
    b = [conv(1000 + i) for i in range(200)] + [
        conv(5, "  question   number 5 ")
    ]  # whitespace-normalized dup of a's c5
    write(root, "sources", "a", a, ["{not json", json.dumps({"id": "x", "conversations": []})])
    write(root, "sources", "b", b)
    write(root, "regenerated", "b", b)  # preferred over sources/b
    rep = build_mix(root, {"weights": {"a": 3, "b": 1}, "seed": 7, "eval": {"fraction": 0.1, "min_rows": 30}})
    assert rep["inputs"]["b"]["origin"] == "regenerated"
    assert rep["duplicates_by_pair"] == {"a -> b": 1}
    # a has 300 rows, b 200 → largest 3:1 mix is 300 a + 100 b
    assert rep["per_source"]["a"]["target_rows"] == 300 and rep["per_source"]["b"]["target_rows"] == 100
    train, test, q = (read(root / "mix" / n) for n in ("train.jsonl", "test.jsonl", "quarantine.jsonl"))
    assert len(test) == 40 and len(train) == 360
    assert rep["rows_in"] == len(train) + len(test) + len(q) == 503
    reasons = {x["reason"].split(":")[0] for x in q}
    assert reasons == {"invalid JSON", "invalid row", "duplicate", "not sampled (weight)"}
    assert all(r["source"] in ("a", "b") and "conversations" in r for r in train + test)
    weights = checks.weights_honoured(root / "mix", rep, 0.02)
    assert weights.passed, weights.description
    assert checks.no_duplicate_content(root / "mix").passed
    assert checks.counts_reconcile(root / "mix", rep).passed
    # seeded: same config → byte-identical output
    before = (root / "mix" / "train.jsonl").read_bytes()
    build_mix(root, {"weights": {"a": 3, "b": 1}, "seed": 7, "eval": {"fraction": 0.1, "min_rows": 30}})
    assert (root / "mix" / "train.jsonl").read_bytes() == before


def test_caps_near_dup_and_source_selection(tmp_path):
    write(tmp_path, "sources", "a", [conv(i, f"shared prefix that is long enough {i}") for i in range(50)])
    write(tmp_path, "sources", "b", [conv(100 + i) for i in range(50)])
    rep = build_mix(tmp_path, {"sources": ["a"], "dedup": {"near_dup_prefix_chars": 30}, "eval": {"fraction": 0}})
    assert rep["sources"] == ["a"] and rep["train_rows"] == 1 and rep["duplicates_removed"] == 49
    rep = build_mix(tmp_path, {"caps": {"b": 10}, "eval": {"fraction": 0}})
    assert rep["per_source"]["b"]["train_rows"] == 10 and rep["per_source"]["a"]["train_rows"] == 50
    assert checks.weights_honoured(tmp_path / "mix", rep, 0.02).passed
    with pytest.raises(ValueError, match="have no data"):
        build_mix(tmp_path, {"sources": ["zzz"]})
    with pytest.raises(ValueError, match="unknown key"):
        mix_config({"weight": {}})


def test_checks_fail_on_crafted_bad_mix(tmp_path):
    write(tmp_path, "sources", "a", [conv(i) for i in range(40)])
    write(tmp_path, "sources", "b", [conv(100 + i) for i in range(40)])
    rep = build_mix(tmp_path, {"weights": {"a": 1, "b": 1}, "eval": {"fraction": 0}})
    mix = tmp_path / "mix"
    rows = read(mix / "train.jsonl")
    # tamper: duplicate a row, and skew the shares by dropping b rows
    skewed = [r for r in rows if r["source"] == "a"] + [r for r in rows if r["source"] == "b"][:5]
    with open(mix / "train.jsonl", "w") as f:
        for r in skewed + skewed[:1]:
            f.write(json.dumps(r) + "\n")
    assert not checks.no_duplicate_content(mix).passed
    assert not checks.weights_honoured(mix, rep, 0.02).passed
    assert not checks.counts_reconcile(mix, rep).passed


def test_input_changed_while_mixing_is_refused_and_old_outputs_stay(tmp_path, monkeypatch):
    """Kept rows are re-read by byte offset when written: an input rewritten mid-mix must not
    leak misaligned rows into the outputs."""
    import specforge_assets.mix.mix as mixmod

    write(tmp_path, "sources", "a", [conv(i) for i in range(50)])
    build_mix(tmp_path, {})
    before = (tmp_path / "mix" / "train.jsonl").read_bytes()
    real = mixmod.sha256_file

    def hash_then_rewrite(path):
        digest = real(path)
        if "sources" in str(path):  # an upstream run rewrites the source after it was stamped
            write(tmp_path, "sources", "a", [conv(i, f"other {i}") for i in range(60)])
        return digest

    monkeypatch.setattr(mixmod, "sha256_file", hash_then_rewrite)
    with pytest.raises(RuntimeError, match="changed while the mix was being built"):
        build_mix(tmp_path, {})
    assert (tmp_path / "mix" / "train.jsonl").read_bytes() == before
    assert not [p for p in (tmp_path / "mix").iterdir() if p.name.endswith(".tmp")]


def test_a_source_without_usable_rows_takes_no_share(tmp_path):
    """Found with real data (GSM8K 2 : CodeAlpaca 1 : GPTeacher 1, MT-Bench unlisted and not
    regenerated yet): a source whose rows are all prompt-only (default weight 1) made the largest
    mix honouring the shares empty, and the mix failed. It now takes no share; the others keep
    theirs and the weights check passes."""
    prompt_only = [{"id": f"p{i}", "conversations": [{"role": "user", "content": f"q{i}"}]} for i in range(20)]
    write(tmp_path, "sources", "a", [conv(i) for i in range(200)])
    write(tmp_path, "sources", "b", [conv(1000 + i) for i in range(200)])
    write(tmp_path, "sources", "prompts", prompt_only)
    rep = build_mix(tmp_path, {"weights": {"a": 2, "b": 1}, "seed": 1})
    assert rep["per_source"]["a"]["target_rows"] == 200 and rep["per_source"]["b"]["target_rows"] == 100
    assert rep["per_source"]["prompts"]["target_rows"] == 0
    assert rep["shares"]["prompts"]["target"] == 0.0 and abs(rep["shares"]["a"]["target"] - 2 / 3) < 1e-9
    q = read(tmp_path / "mix" / "quarantine.jsonl")
    assert sum(1 for x in q if x["source"] == "prompts") == 20
    weights = checks.weights_honoured(tmp_path / "mix", rep, 0.02)
    assert weights.passed, weights.description
    assert checks.counts_reconcile(tmp_path / "mix", rep).passed


def test_mix_weights_are_declared_once_in_mix_yaml(data_root):
    """Mix weights have one declaration, configs/mix.yaml `weights:` (bounded there); a
    per-source `weight:` in sources.yaml is refused with one line saying where it goes (it used
    to be a second, silently overridden way)."""
    from specforge_assets.mix.mix import mix_config
    from specforge_assets.sources.config import resolve_source

    with pytest.raises(
        Exception, match=r"^sources.yaml sources.a: 'weight' is set in configs/mix.yaml \(weights: \{a: N\}\)"
    ):
        resolve_source("a", {"sources": {"a": {"preset": "gsm8k", "weight": 3}}}, data_root)
    with pytest.raises(Exception, match=r"^sources.yaml sources.a: 'weight' is set in configs/mix.yaml"):
        resolve_source("a", {"defaults": {"weight": 1}, "sources": {"a": {"preset": "gsm8k"}}}, data_root)
    with pytest.raises(ValueError, match=r"configs/mix.yaml: weights.a: must be greater than or equal to 0"):
        mix_config({"weights": {"a": -1}})
