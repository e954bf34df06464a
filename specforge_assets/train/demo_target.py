"""The demo target: a tiny ChatML chat model built from the sample corpus, fully offline.

`build_demo_target(out_dir, texts)`:
1. trains a byte-level BPE tokenizer (the `tokenizers` library) on the texts, with the ChatML
   special tokens `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`;
2. wraps it as a `PreTrainedTokenizerFast` carrying a Qwen2-style ChatML `chat_template` (default
   system prompt "You are a helpful assistant.", the same one SpecForge's `qwen` template injects,
   so rendering with or without SpecForge's injection gives identical text);
3. pretrains a small `Qwen2ForCausalLM` (4 layers, ~1M parameters) briefly on the CPU on the
   chat-rendered texts, so its greedy continuations are learnable by a draft (not random noise);
4. saves model (safetensors), tokenizer, generation config and `manifest.json` into `out_dir`
   atomically (built in a temp sibling folder, then renamed).

Deterministic for a given seed and inputs on a given machine. `pretrain_steps=0` gives a quick
random model (tests). The result loads with `AutoModelForCausalLM` / `AutoTokenizer` and is
servable by `transformers serve`. No Dagster import.
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from ..configmodel import validate
from ..fileio import iter_jsonl, sha256_json, staged_dir, write_manifest
from .settings import DemoTargetSettings

BUILDER_VERSION = "demo-target-v1"

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
QWEN2_PRETOKENIZE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

# Qwen2-style ChatML. A conversation that does not start with a system message gets the default
# system prompt (SpecForge's `qwen` registry entry injects the same one), and
# `add_generation_prompt` opens the assistant turn.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + (message['content'] if message['content'] is string else '') + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def render_chatml(messages: list[dict], add_generation_prompt: bool = False) -> str:
    """Python twin of CHAT_TEMPLATE (tests check both agree)."""
    out = []
    for i, m in enumerate(messages):
        role = m.get("role") or m.get("from") or "user"
        role = {"human": "user", "gpt": "assistant"}.get(role, role)
        content = m.get("content", m.get("value", ""))
        if not isinstance(content, str):
            content = "" if content is None else json.dumps(content)
        if i == 0 and role != "system":
            out.append(f"{IM_START}system\n{DEFAULT_SYSTEM_PROMPT}{IM_END}\n")
        out.append(f"{IM_START}{role}\n{content}{IM_END}\n")
    if add_generation_prompt:
        out.append(f"{IM_START}assistant\n")
    return "".join(out)


def row_to_text(row: Any) -> str | None:
    """A corpus row → one training document: a string as is, {"text"} as is,
    {"conversations"} rendered with ChatML. Anything else → None (skipped)."""
    if isinstance(row, str):
        return row
    if isinstance(row, dict):
        if isinstance(row.get("text"), str):
            return row["text"]
        conv = row.get("conversations")
        if isinstance(conv, list) and conv and all(isinstance(m, dict) for m in conv):
            return render_chatml(conv)
    return None


def build_params(**overrides: Any) -> dict:
    """The build parameters: configs/train.yaml `demo_target:`'s model (`DemoTargetSettings`, its
    defaults) with `overrides` (None: the default) applied, without `sources`. Raises
    `ConfigError` (one line) for an unknown parameter or a bad value."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return validate(DemoTargetSettings, given, "demo target parameters").model_dump(exclude={"sources"})


def corpus_fingerprint(texts: Iterable[Any], params: dict) -> str:
    """Content hash of what a build depends on: texts + parameters + builder version."""
    docs = [row_to_text(t) for t in texts]
    return sha256_json({"builder": BUILDER_VERSION, "params": params, "docs": sha256_json(docs)})


def _train_tokenizer(docs: list[str], vocab_size: int):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    # Exactly Qwen2's pipeline (NFC, Qwen split regex, byte-level): transformers 5 rebuilds a
    # `qwen2` model's tokenizer with this pipeline around the stored vocab/merges, so anything
    # else would tokenize differently depending on how the folder is loaded.
    tok = Tokenizer(
        models.BPE(
            unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False, byte_fallback=False
        )
    )
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer, length=len(docs))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        unk_token=None,
        bos_token=None,
        additional_special_tokens=[IM_START, IM_END, ENDOFTEXT],
        model_max_length=DemoTargetSettings.model_fields["max_position_embeddings"].default,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _token_stream(tokenizer, docs: list[str]) -> list[int]:
    eot = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    ids: list[int] = []
    for enc in tokenizer.backend_tokenizer.encode_batch(docs, add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(eot)
    return ids


def build_demo_target(
    out_dir: Path | str,
    texts: list[Any],
    *,
    pretrain_steps: int | None = None,
    seed: int | None = None,
    hidden_size: int | None = None,
    num_layers: int | None = None,
    vocab_size: int | None = None,
    num_heads: int | None = None,
    num_kv_heads: int | None = None,
    intermediate_size: int | None = None,
    batch_size: int | None = None,
    block_size: int | None = None,
    lr: float | None = None,
    log: Callable[[str], None] = print,
    extra_manifest: dict | None = None,
    **more: Any,
) -> Path:
    """Build the demo target into `out_dir` (replaced atomically) and return it.

    `texts`: strings (already rendered documents) or SpecForge rows ({"conversations": [...]} or
    {"text": ...}); conversations are rendered with the ChatML template.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    t0 = time.time()
    params = build_params(
        pretrain_steps=pretrain_steps,
        seed=seed,
        hidden_size=hidden_size,
        num_layers=num_layers,
        vocab_size=vocab_size,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        batch_size=batch_size,
        block_size=block_size,
        lr=lr,
        **more,
    )
    docs = [d for d in (row_to_text(t) for t in texts) if d]
    if not docs:
        from .errors import TrainInputError

        raise TrainInputError("build_demo_target: no usable texts (need strings or rows with 'conversations'/'text')")
    fingerprint = corpus_fingerprint(texts, params)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    random.seed(params["seed"])
    torch.manual_seed(params["seed"])

    tokenizer = _train_tokenizer(docs, params["vocab_size"])
    vocab = len(tokenizer)
    log(f"[demo-target] tokenizer: {vocab} tokens from {len(docs)} documents ({sum(map(len, docs))} chars)")

    if params["hidden_size"] % params["num_heads"]:
        raise ValueError("hidden_size must be divisible by num_heads")
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=params["hidden_size"],
        intermediate_size=params["intermediate_size"],
        num_hidden_layers=params["num_layers"],
        num_attention_heads=params["num_heads"],
        num_key_value_heads=params["num_kv_heads"],
        max_position_embeddings=params["max_position_embeddings"],
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.convert_tokens_to_ids(ENDOFTEXT),
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.convert_tokens_to_ids(ENDOFTEXT),
        use_cache=True,
    )
    model = Qwen2ForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"[demo-target] Qwen2ForCausalLM: {params['num_layers']} layers, hidden {params['hidden_size']}, {n_params:,} parameters"
    )

    losses = _pretrain(model, tokenizer, docs, params, log)
    model.eval()

    gen = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=[config.eos_token_id, config.pad_token_id],
        pad_token_id=config.pad_token_id,
        do_sample=False,
        max_new_tokens=256,
    )
    model.generation_config = gen

    with staged_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _ensure_template_in_tokenizer_config(tmp)
        info = {
            "kind": "demo_target",
            "builder_version": BUILDER_VERSION,
            "fingerprint": fingerprint,
            "params": params,
            "num_documents": len(docs),
            "num_chars": sum(map(len, docs)),
            "num_parameters": n_params,
            "vocab_size": vocab,
            "pretrain_loss_first": losses[0] if losses else None,
            "pretrain_loss_last": losses[-1] if losses else None,
            "build_seconds": round(time.time() - t0, 2),
            **(extra_manifest or {}),
        }
        write_manifest(tmp, **info)
        os.chmod(tmp, 0o755)
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
    log(f"[demo-target] saved to {out_dir} in {time.time() - t0:.1f}s")
    return out_dir


def _ensure_template_in_tokenizer_config(d: Path) -> None:
    """The contract: tokenizer_config.json carries the chat_template (newer transformers write
    it to chat_template.jinja only; keep both, identical)."""
    p = d / "tokenizer_config.json"
    cfg = json.loads(p.read_text(encoding="utf-8"))
    cfg["chat_template"] = CHAT_TEMPLATE
    # 5.x writes "TokenizersBackend", unknown to 4.x; Qwen2Tokenizer resolves everywhere and its
    # pipeline is the one the tokenizer was trained with.
    cfg["tokenizer_class"] = "Qwen2Tokenizer"
    p.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _pretrain(model, tokenizer, docs: list[str], params: dict, log) -> list[float]:
    import torch

    steps = int(params["pretrain_steps"])
    if steps <= 0:
        return []
    stream = torch.tensor(_token_stream(tokenizer, docs), dtype=torch.long)
    block, bs = int(params["block_size"]), int(params["batch_size"])
    if stream.numel() <= block + 1:
        reps = (block + 2) // max(1, stream.numel()) + 1
        stream = stream.repeat(reps)
    gen = torch.Generator().manual_seed(params["seed"])
    opt = torch.optim.AdamW(model.parameters(), lr=params["lr"], betas=(0.9, 0.95), weight_decay=params["weight_decay"])
    warm = max(1, min(int(params["warmup_steps"]), steps // 5 or 1))

    def lr_at(s: int) -> float:
        if s < warm:
            return (s + 1) / warm
        prog = (s - warm) / max(1, steps - warm)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * prog))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    losses: list[float] = []
    n_starts = stream.numel() - block - 1
    log_every = max(1, steps // 10)
    t0 = time.time()
    for step in range(steps):
        starts = torch.randint(0, n_starts + 1, (bs,), generator=gen)
        x = torch.stack([stream[s : s + block] for s in starts.tolist()])
        out = model(input_ids=x, labels=x)
        loss = out.loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if step % log_every == 0 or step == steps - 1:
            log(f"[demo-target] pretrain step {step + 1}/{steps} loss {losses[-1]:.3f} ({time.time() - t0:.0f}s)")
    return losses


def load_demo_corpus(
    source_keys: list[str] | None = None,
    *,
    sources_config: dict | None = None,
    log: Callable[[str], None] = print,
) -> tuple[list[dict], dict]:
    """The corpus the demo target is built from: the configured sources' rows, converted by the
    sources layer's own code (same converters, same ids), train split only.

    Read straight from each source's input (the shipped sample), converted into a throw-away
    folder, so the target depends on no asset (regeneration needs the target: no cycle).
    Sources that cannot be read offline (hub-only) are skipped with a message.
    Returns (rows, info) with per-source row counts and input hashes.
    """
    from ..paths import load_config
    from ..sources.config import resolve_source
    from ..sources.errors import SourceError
    from ..sources.normalize import build_source

    cfg = load_config("sources") if sources_config is None else sources_config
    keys = list(source_keys) if source_keys else list((cfg.get("sources") or {}).keys())
    rows: list[dict] = []
    info: dict[str, Any] = {"sources": {}, "skipped": {}}
    with tempfile.TemporaryDirectory(prefix="specforge-demo-corpus-") as tmp:
        for key in keys:
            try:
                spec = resolve_source(key, cfg, Path(tmp))
                res = build_source(spec, Path(tmp), config=cfg, offline=True)
            except (SourceError, FileNotFoundError, ValueError) as e:
                info["skipped"][key] = str(e)[:300]
                log(f"[demo-target] source {key!r} skipped: {str(e)[:200]}")
                continue
            train = Path(res.out_dir) / "train.jsonl"
            n = 0
            unreadable: list = []
            if train.exists():
                for row in iter_jsonl(train, errors=unreadable):
                    rows.append(row)
                    n += 1
            if unreadable:
                log(
                    f"[demo-target] source {key!r}: {len(unreadable)} unreadable rows skipped "
                    f"(line {unreadable[0][0]}: {unreadable[0][1]})"
                )
            info["sources"][key] = {
                "rows": n,
                "data_version": (res.manifest or {}).get("data_version"),
                "unreadable_rows": len(unreadable),
            }
    if not rows:
        from .errors import TrainInputError

        raise TrainInputError(
            f"demo target: no rows from the configured sources {keys} (skipped: {info['skipped']}); "
            "configure a local source in configs/sources.yaml or set configs/target.yaml path"
        )
    return rows, info
