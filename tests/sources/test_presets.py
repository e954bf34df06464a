"""Every SpecForge preset reproduces the reference output byte for byte (fixtures from SpecForge
itself), through the `specforge-assets prepare` command line."""

from __future__ import annotations

import json
import shutil

import pytest

from specforge_assets.cli import main as cli_main
from specforge_assets.paths import load_yaml
from specforge_assets.sources.config import get_preset
from specforge_assets.sources.presets import DEFAULT_SOURCES_YAML

from .conftest import PRESET_FIXTURES, preset_data_path, preset_names, preset_runs

ALL_PRESETS = [
    "ultrachat",
    "sharegpt",
    "eaglechat",
    "perfectblend",
    "perfectblend-llama3.1-8b-instruct",
    "perfectblend-llama3.3-70b-instruct",
    "perfectblend-llama4-scout-instruct",
    "perfectblend-llama4-maverick-instruct",
    "magpie-qwen2.5-pro-1m-v0.1",
    "nebius-llama31-8b-infinity-instruct",
    "opc",
    "gsm8k",
    "hendrycks_math",
    "math_qa",
    "codealpaca-20k",
    "opencodeinstruct",
    "magicoder-evol-instruct",
    "sciq",
    "camel",
]


def test_all_19_presets_declared_as_data():
    presets = {name: get_preset(name) for name in load_yaml(DEFAULT_SOURCES_YAML)["presets"]}
    assert sorted(presets) == sorted(ALL_PRESETS)
    assert sorted(preset_names()) == sorted(ALL_PRESETS)  # and each has a golden fixture
    assert [p.config for p in presets["hendrycks_math"].parts][:2] == ["algebra", "counting_and_probability"]
    assert [p.hub_id for p in presets["camel"].parts] == ["camel-ai/biology", "camel-ai/chemistry", "camel-ai/physics"]


@pytest.mark.parametrize("preset,run", preset_runs(), ids=[f"{p}-{r['name']}" for p, r in preset_runs()])
def test_prepare_cli_reproduces_specforge_bytes(preset, run, tmp_path, capsys):
    data_path = preset_data_path(preset, tmp_path)
    out = tmp_path / "out"
    argv = ["prepare", *run["argv"], "--data-path", str(data_path), "--output-path", str(out)]
    assert cli_main(argv) == 0
    expected = run["expected"]["train"]
    got = (out / f"{preset}_train.jsonl").read_bytes()
    assert got == (PRESET_FIXTURES / preset / expected["file"]).read_bytes()
    assert len(got.splitlines()) == expected["rows"]
    stdout = capsys.readouterr().out
    for line in run["stdout"]:
        if line.startswith("Skipped"):
            assert line in stdout  # same dropped-message count as SpecForge


def _rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("preset", ["perfectblend", "codealpaca-20k"])
def test_split_eval_and_sample_size_match_datasets_train_test_split(preset, tmp_path):
    """SpecForge: first N rows (`select(range(N))`), then `train_test_split(0.05, seed=42)`."""
    import datasets

    data_path = preset_data_path(preset, tmp_path)
    expected = _rows(PRESET_FIXTURES / preset / "expected_train.jsonl")
    for sample_size in (None, 10):
        out = tmp_path / f"out-{sample_size}"
        argv = [
            "prepare",
            "--dataset",
            preset,
            "--data-path",
            str(data_path),
            "--output-path",
            str(out),
            "--split-eval",
        ]
        if sample_size:
            argv += ["--sample-size", str(sample_size)]
        assert cli_main(argv) == 0
        full = expected[:sample_size] if sample_size else expected
        ds = datasets.Dataset.from_dict({"i": list(range(len(full)))}).train_test_split(test_size=0.05, seed=42)
        train = [full[i] for i in ds["train"]["i"]]
        test = [full[i] for i in ds["test"]["i"]]
        assert _rows(out / f"{preset}_train.jsonl") == train
        assert _rows(out / f"{preset}_test.jsonl") == test


def test_sample_size_keeps_first_rows_with_full_dataset_index(tmp_path):
    data_path = preset_data_path("camel", tmp_path)
    out = tmp_path / "out"
    assert (
        cli_main(
            [
                "prepare",
                "--dataset",
                "camel",
                "--data-path",
                str(data_path),
                "--output-path",
                str(out),
                "--sample-size",
                "40",
            ]
        )
        == 0
    )
    expected = (PRESET_FIXTURES / "camel" / "expected_train.jsonl").read_text(encoding="utf-8").splitlines()[:40]
    assert (out / "camel_train.jsonl").read_text(encoding="utf-8").splitlines() == expected


def test_existing_output_is_kept_and_reported(tmp_path, capsys):
    data_path = preset_data_path("gsm8k", tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "gsm8k_train.jsonl").write_text("keep me\n")
    assert cli_main(["prepare", "--dataset", "gsm8k", "--data-path", str(data_path), "--output-path", str(out)]) == 0
    assert (out / "gsm8k_train.jsonl").read_text() == "keep me\n"
    assert "already exists" in capsys.readouterr().out


def test_sciq_is_seeded_and_deterministic(tmp_path):
    data_path = preset_data_path("sciq", tmp_path)
    outs = []
    for i in range(2):
        out = tmp_path / f"out{i}"
        assert cli_main(["prepare", "--dataset", "sciq", "--data-path", str(data_path), "--output-path", str(out)]) == 0
        outs.append((out / "sciq_train.jsonl").read_bytes())
    assert outs[0] == outs[1] == (PRESET_FIXTURES / "sciq" / "expected_train.jsonl").read_bytes()


def test_data_path_layouts(tmp_path):
    """A single file, a folder of shards, a hub-snapshot folder (`data/`), `<config>.parquet` files."""
    raw = PRESET_FIXTURES / "gsm8k" / "raw.parquet"
    expected = (PRESET_FIXTURES / "gsm8k" / "expected_train.jsonl").read_bytes()
    layouts = {
        "file": raw,
        "config-dir": ("main/train-00000-of-00001.parquet",),
        "snapshot": ("data/train-00000-of-00001.parquet", "data/test-00000-of-00001.parquet"),
        "config-file": ("main.parquet",),
    }
    for name, layout in layouts.items():
        if isinstance(layout, tuple):
            base = tmp_path / name
            for rel in layout:
                (base / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(raw, base / rel)
            data_path = base
        else:
            data_path = layout
        out = tmp_path / f"out-{name}"
        assert (
            cli_main(["prepare", "--dataset", "gsm8k", "--data-path", str(data_path), "--output-path", str(out)]) == 0
        )
        assert (out / "gsm8k_train.jsonl").read_bytes() == expected, name


@pytest.mark.parametrize("as_array", [False, True])
def test_json_data_paths_give_the_same_rows(tmp_path, as_array):
    """JSON Lines (pyarrow) and a JSON array (ShareGPT's own format) give SpecForge's output."""
    import pyarrow.parquet as pq

    rows = pq.read_table(PRESET_FIXTURES / "sharegpt" / "raw.parquet").to_pylist()
    src = tmp_path / ("sharegpt.json" if as_array else "sharegpt.jsonl")
    if as_array:
        src.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    else:
        src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    assert cli_main(["prepare", "--dataset", "sharegpt", "--data-path", str(src), "--output-path", str(out)]) == 0
    assert (out / "sharegpt_train.jsonl").read_bytes() == (
        PRESET_FIXTURES / "sharegpt" / "expected_train.jsonl"
    ).read_bytes()


def test_multi_config_data_path_names_missing_config(tmp_path, capsys):
    (tmp_path / "raw" / "algebra").mkdir(parents=True)
    shutil.copy(
        PRESET_FIXTURES / "hendrycks_math" / "raw.algebra.parquet", tmp_path / "raw" / "algebra" / "train.parquet"
    )
    rc = cli_main(
        [
            "prepare",
            "--dataset",
            "hendrycks_math",
            "--data-path",
            str(tmp_path / "raw"),
            "--output-path",
            str(tmp_path / "out"),
        ]
    )
    assert rc == 1
    err = capsys.readouterr().err
    assert "counting_and_probability" in err and "<config>" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("name", ["sharegpt4v", "allava4v"])
def test_vision_presets_are_rejected(name, tmp_path, capsys):
    assert cli_main(["prepare", "--dataset", name, "--output-path", str(tmp_path)]) == 1
    assert "not supported" in capsys.readouterr().err


def test_unknown_preset_lists_supported(tmp_path, capsys):
    assert cli_main(["prepare", "--dataset", "nope", "--output-path", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "unknown preset 'nope'" in err and "ultrachat" in err


def test_opc_subset_only_for_opc(tmp_path, capsys):
    data_path = preset_data_path("gsm8k", tmp_path)
    assert (
        cli_main(
            [
                "prepare",
                "--dataset",
                "gsm8k",
                "--data-path",
                str(data_path),
                "--output-path",
                str(tmp_path / "o"),
                "--opc-subset",
                "all",
            ]
        )
        == 1
    )
    assert "--opc-subset" in capsys.readouterr().err


@pytest.mark.parametrize("preset", ["ultrachat", "sharegpt", "perfectblend", "magpie-qwen2.5-pro-1m-v0.1"])
def test_columnar_fast_path_equals_row_converters(preset, tmp_path, data_root, monkeypatch):
    """Same train, test and quarantine bytes with and without the Arrow fast path."""
    from specforge_assets.sources import fast
    from specforge_assets.sources.config import resolve_source
    from specforge_assets.sources.normalize import build_source
    from specforge_assets.sources.prepare import prepare_preset

    data_path = preset_data_path(preset, tmp_path)
    cfg = {
        "sources": {
            "s": {"preset": preset, "data_path": str(data_path), "quarantine_threshold": 1.0, "split_eval": True}
        }
    }
    outputs = []
    for label in ("fast", "rows"):
        if label == "rows":
            monkeypatch.setattr(fast, "convert_arrow", lambda *a, **k: None)
        root = tmp_path / f"root-{label}"
        res = build_source(resolve_source("s", cfg, root), root, config=cfg)
        prepare_preset(preset, tmp_path / f"cli-{label}", data_path=data_path, log=lambda s: None)
        outputs.append(
            [(res.out_dir / n).read_bytes() for n in ("train.jsonl", "test.jsonl", "quarantine.jsonl")]
            + [(tmp_path / f"cli-{label}" / f"{preset}_train.jsonl").read_bytes(), res.manifest["skipped_messages"]]
        )
    assert outputs[0] == outputs[1]
