"""The embedded default is generated deterministically and the committed files are its output."""

from __future__ import annotations

from specforge_assets.paths import SAMPLE_DIR
from specforge_assets.sample.generate import generate


def test_generator_reproduces_committed_sample(tmp_path):
    import pyarrow.parquet as pq

    counts = generate(tmp_path)
    assert 300 <= sum(counts.values()) <= 600
    produced = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(
        p.relative_to(SAMPLE_DIR)
        for p in SAMPLE_DIR.rglob("*")
        if p.is_file() and p.suffix in {".parquet", ".json", ".jsonl"}
    )
    assert produced == committed
    for rel in produced:
        if rel.suffix == ".parquet":
            assert pq.read_table(tmp_path / rel).to_pylist() == pq.read_table(SAMPLE_DIR / rel).to_pylist(), rel
        else:
            assert (tmp_path / rel).read_bytes() == (SAMPLE_DIR / rel).read_bytes(), rel


def test_sample_is_in_the_hub_schemas():
    import pyarrow.parquet as pq

    uc = pq.read_schema(SAMPLE_DIR / "ultrachat" / "train_sft-00000-of-00001.parquet")
    assert uc.names == ["prompt", "prompt_id", "messages"]
    assert pq.read_schema(SAMPLE_DIR / "gsm8k" / "main" / "train-00000-of-00001.parquet").names == [
        "question",
        "answer",
    ]
    assert pq.read_schema(SAMPLE_DIR / "perfectblend" / "train-00000-of-00001.parquet").names == [
        "conversations",
        "source",
    ]
    for config in ("largescale_diverse_instruct", "filtered_infinity_instruct", "realuser_instruct"):
        assert pq.read_schema(SAMPLE_DIR / "opc" / config / "train-00000-of-00001.parquet").names == [
            "instruction",
            "output",
            "tag",
        ]
