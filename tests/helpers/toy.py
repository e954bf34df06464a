"""A learnable toy for tests and benchmarks: a tiny Qwen2 target pretrained on arithmetic
progressions, a tokenized dataset in the tokenized/dataset layout, a SpecForge vocab mapping.

Sequence: ``[BOS, step token, s, s+d, s+2d, ...]`` with values wrapped into ``[BASE, VOCAB)``;
the loss mask covers the progression after its first two values. A target pretrained for a few
seconds continues the progression greedily, so a draft can learn to predict it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

VOCAB = 64
BASE = 8  # value tokens are BASE..VOCAB-1
BOS = 1
STEPS = (1, 2, 3)


def toy_sequence(g: torch.Generator, length: int) -> tuple[list[int], list[int]]:
    d = STEPS[int(torch.randint(len(STEPS), (1,), generator=g))]
    s = int(torch.randint(VOCAB - BASE, (1,), generator=g))
    span = VOCAB - BASE
    vals = [BASE + (s + j * d) % span for j in range(length - 2)]
    ids = [BOS, 2 + d] + vals
    mask = [0, 0, 0, 0] + [1] * (length - 4)
    return ids, mask


def toy_rows(n: int, length: int = 24, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ids, mask = toy_sequence(g, length)
        out.append({"id": f"toy-{seed}-{i}", "input_ids": ids, "loss_mask": mask})
    return out


def tiny_qwen2_config(vocab: int = VOCAB, hidden: int = 64, layers: int = 4, heads: int = 4, kv_heads: int = 2):
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=BOS,
        eos_token_id=2,
    )


def build_toy_target(out_dir: str | Path | None = None, *, pretrain_steps: int = 150, seed: int = 0, **cfg_kw):
    """A tiny Qwen2ForCausalLM; pretrained briefly on toy progressions when pretrain_steps > 0."""
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(tiny_qwen2_config(**cfg_kw)).float()
    if pretrain_steps:
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(seed + 1)
        model.train()
        for _ in range(pretrain_steps):
            batch = [toy_sequence(g, 24)[0] for _ in range(32)]
            ids = torch.tensor(batch)
            loss = model(input_ids=ids, labels=ids).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
    if out_dir is not None:
        model.save_pretrained(str(out_dir))
    return model


def write_toy_dataset(out_dir: str | Path, n: int = 64, length: int = 24, seed: int = 0, shards: int = 2) -> Path:
    """Parquet shards (id, input_ids, loss_mask, length) like tokenized/dataset."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = toy_rows(n, length, seed)
    per = -(-n // shards)
    for s in range(shards):
        part = rows[s * per : (s + 1) * per]
        if not part:
            continue
        table = pa.table(
            {
                "id": [r["id"] for r in part],
                "input_ids": [r["input_ids"] for r in part],
                "loss_mask": [r["loss_mask"] for r in part],
                "length": [len(r["input_ids"]) for r in part],
            }
        )
        pq.write_table(table, out / f"shard-{s:05d}.parquet")
    return out


def build_vocab_mapping(rows: list[dict], draft_vocab_size: int, vocab_size: int) -> dict[str, torch.Tensor]:
    """SpecForge's selection: count loss-masked tokens, top-N (fill with zero-count ids), sort."""
    c: Counter = Counter()
    for r in rows:
        ids = torch.tensor(r["input_ids"])[torch.tensor(r["loss_mask"]) == 1]
        u, n = ids.unique(return_counts=True)
        c.update(dict(zip(u.tolist(), n.tolist())))
    for i in range(draft_vocab_size):
        if len(c) >= draft_vocab_size:
            break
        c.setdefault(i, 0)
    used = sorted(t for t, _ in c.most_common(draft_vocab_size))
    d2t = torch.tensor([t - i for i, t in enumerate(used)], dtype=torch.long)
    t2d = torch.zeros(vocab_size, dtype=torch.bool)
    t2d[used] = True
    return {"d2t": d2t, "t2d": t2d}


def write_vocab_mapping(path: str | Path, rows: list[dict], draft_vocab_size: int, vocab_size: int = VOCAB) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save(build_vocab_mapping(rows, draft_vocab_size, vocab_size), p)
    return p


def cached_toy_target(pretrain_steps: int = 100, seed: int = 0, cache_dir: str | Path | None = None) -> Path:
    """Build the toy target once per machine (deterministic, keyed by its parameters) and return
    its directory; tests in several modules share it. Written to a temp dir, then renamed."""
    import os
    import shutil
    import tempfile

    from specforge_assets.fileio import make_staging_dir

    base = Path(
        cache_dir or os.environ.get("SPECFORGE_TOY_CACHE") or Path(tempfile.gettempdir()) / "specforge-toy-cache"
    )
    import transformers

    final = base / f"target-v1-s{pretrain_steps}-seed{seed}-tf{transformers.__version__}-torch{torch.__version__}"
    if (final / "config.json").exists():
        return final
    base.mkdir(parents=True, exist_ok=True)
    tmp = make_staging_dir(base, ".build-")
    try:
        build_toy_target(tmp, pretrain_steps=pretrain_steps, seed=seed)
        try:
            tmp.rename(final)
        except OSError:  # another process won the race
            pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
