"""specforge_assets.target / target_import decisions behind models/target_model, and the `pipes`
resource that launches training (plain Python; one real Pipes client, no run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from specforge_assets.errors import UserError
from specforge_assets.fileio import write_manifest
from specforge_assets.resources import SpecforgeStore, training_pipes
from specforge_assets.target import (
    demo_target_is_current,
    external_target,
    model_summary,
    target_config,
    target_loads_with_chat_template,
)
from specforge_assets.target_import import (
    SOURCE_MARKER,
    TargetImportError,
    import_source,
    import_unless_current,
    quick_content_version,
)
from specforge_assets.train.demo_target import build_demo_target

from .corpus import conversations


def test_demo_target_is_reused_only_for_its_fingerprint_with_its_files(tmp_path):
    out = tmp_path / "target_model"
    assert not demo_target_is_current(out, "f1")
    out.mkdir()
    write_manifest(out, fingerprint="f1")
    assert not demo_target_is_current(out, "f1")  # no weights, no tokenizer
    (out / "model.safetensors").write_bytes(b"w")
    (out / "tokenizer.json").write_text("{}")
    assert demo_target_is_current(out, "f1")
    assert not demo_target_is_current(out, "f2")
    (out / "tokenizer.json").unlink()
    assert not demo_target_is_current(out, "f1")


def test_external_target_folder_version_and_summary(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    with pytest.raises(UserError) as e:
        external_target({"path": str(folder)})
    assert str(e.value) == f"configs/target.yaml path: {folder.resolve()} has no config.json (not an HF model folder)"
    (folder / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 2, "hidden_size": 16, "vocab_size": 99})
    )
    (folder / "model.safetensors").write_bytes(b"weights")
    resolved, version, details = external_target({"path": str(folder)})
    assert (resolved, version) == (folder.resolve(), quick_content_version(folder)[0])
    assert details == {
        "path": str(folder.resolve()),
        "files": 2,
        "architecture": "LlamaForCausalLM",
        "num_hidden_layers": 2,
        "hidden_size": 16,
        "vocab_size": 99,
    }
    assert model_summary(folder)["torch_dtype"] == "None"


def test_chat_template_check_on_a_real_tokenizer(tmp_path):
    target = build_demo_target(
        tmp_path / "target_model",
        conversations(24),
        pretrain_steps=0,
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        log=lambda s: None,
    )
    outcome = target_loads_with_chat_template(target, trust_remote_code=False)
    passed, details = outcome.passed, outcome.metadata
    assert passed, details
    assert "<|im_start|>user\nHello!<|im_end|>" in details["rendered"] and details["vocab_size"] == 300
    cfg = json.loads((target / "tokenizer_config.json").read_text())
    cfg.pop("chat_template")
    (target / "tokenizer_config.json").write_text(json.dumps(cfg))
    for extra in target.glob("chat_template.*"):
        extra.unlink()
    outcome = target_loads_with_chat_template(target, trust_remote_code=False)
    passed, description, details = outcome.passed, outcome.description, outcome.metadata
    assert not passed and details == {"error": f"{target}: the tokenizer has no chat_template"}
    assert description == details["error"]
    outcome = target_loads_with_chat_template(tmp_path / "missing", trust_remote_code=False)
    passed, details = outcome.passed, outcome.metadata
    assert not passed and details["error"].split(":")[0].endswith("Error")


def test_an_unchanged_gguf_source_is_not_imported_again(tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF fake")
    out = tmp_path / "data" / "models" / "target_model"
    out.mkdir(parents=True)
    (out / "import_manifest.json").write_text(json.dumps({"content_version": "c" * 64}))
    config = target_config({"path": str(gguf), "trust_remote_code": False})
    source = import_source("gguf", gguf, config)
    assert source == {"kind": "gguf", "sha256": source["sha256"], "bytes": 9, "trust_remote_code": False}
    (out.parent / SOURCE_MARKER).write_text(json.dumps({"source": source, "content_version": "c" * 64}))
    logged: list[str] = []
    manifest, kind, cached = import_unless_current(config, out, log=logged.append)
    assert (manifest["content_version"], kind, cached) == ("c" * 64, "gguf", True)
    assert logged == [f"target {gguf} unchanged: reusing {out}"]
    # trusting remote code is part of the source: it imports again (and this fake file is refused)
    with pytest.raises(TargetImportError, match=r"not a readable GGUF file"):
        import_unless_current({**config, "trust_remote_code": True}, out, log=logged.append)
    assert logged[-1] == f"importing target {gguf} (gguf) into {out}"


def _store(tmp_path: Path, train: dict | str) -> SpecforgeStore:
    cfg = tmp_path / "configs"
    cfg.mkdir(exist_ok=True)
    (cfg / "train.yaml").write_text(train if isinstance(train, str) else yaml.safe_dump(train))
    return SpecforgeStore(data_root=str(tmp_path / "data"), config_dir=str(cfg))


def test_the_pipes_resource_honours_termination_timeout(tmp_path):
    pipes = training_pipes(_store(tmp_path, {"launch": {"termination_timeout_s": 7}}))
    assert (pipes.termination_timeout_seconds, pipes.forward_termination, pipes.forward_stdio) == (7, True, True)
    # a train.yaml that does not validate: the default here, the training step reports the error
    assert training_pipes(_store(tmp_path, {"launch": {"termination_timeout_s": -1}})).termination_timeout_seconds == 60


def test_the_code_location_builds_pipes_from_its_store(tmp_path):
    from specforge_assets.definitions import build_definitions

    defs = build_definitions(_store(tmp_path, {"launch": {"termination_timeout_s": 7}}))
    assert defs.resources["pipes"].termination_timeout_seconds == 7
