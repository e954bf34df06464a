"""Offline mode: the target's hidden states for the tokenized dataset, written once, read by training.

Layout of `<data root>/models/target_hidden_states/`:
* `shard_00000.safetensors`, ...: per shard, the rows' tokens concatenated (no padding stored):
  `input_ids` int64[N], `loss_mask` int8[N], `aux_hidden_states` [N, 3·H] (outputs of the three aux
  layers, concatenated), `hidden_states` [N, H] (final hidden state after the final norm = the
  lm_head input), `offsets` int64[rows + 1] (row r = tokens offsets[r]:offsets[r+1]).
* `manifest.json`: shards (file, rows, tokens, row ids in order, sha256), aux layer ids, hidden
  size, dtype, max_length, the target and dataset they came from, total bytes, and the estimate
  shown before writing.

Rows keep the tokenized dataset's order and ids (one entry per row id), truncated to the training
`max_length` (the target is causal, so a prefix's features don't depend on what follows).

Training reads them through :class:`OfflineFeatureTarget`: a stand-in for the target model that
`train_draft` calls like the real one; it returns the stored aux features and computes logits with
the target's `lm_head` (loaded alone from the target's safetensors, as SpecForge does offline).
No Dagster import.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..fileio import sha256_file, staged_dir, write_manifest
from .settings import HiddenStatesSettings, TrainConfig

_HIDDEN, _TRAIN = HiddenStatesSettings(), TrainConfig()  # the defaults below are configs/train.yaml's

FORMAT = "specforge-assets/hidden-states-v1"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ValueError(f"hidden_states dtype {name!r}: use one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def _target_config(target: Path | str):
    from transformers import AutoConfig

    from .errors import load_target_part

    return load_target_part(AutoConfig, target, "target model config")


def _aux_layers(cfg, aux_layer_ids: list[int] | None) -> list[int]:
    from .eagle3 import aux_layer_ids as default_aux

    return list(aux_layer_ids) if aux_layer_ids else default_aux(int(cfg.num_hidden_layers))


def estimate_size(
    target: Path | str,
    dataset: Path | str,
    *,
    dtype: str = "float32",
    max_rows: int | None = None,
    max_length: int = 2048,
) -> dict:
    """Bytes the features will take: per token 4·H floats (3·H aux + H final) + 9 bytes of ids/mask."""
    from .data import load_tokenized

    cfg = _target_config(target)
    rows = load_tokenized(dataset, max_length)
    n = len(rows) if max_rows is None else min(len(rows), int(max_rows))
    tokens = sum(int(rows.input_ids[i].numel()) for i in range(n))
    per_token = 4 * int(cfg.hidden_size) * torch.tensor([], dtype=_dtype(dtype)).element_size() + 9
    return {
        "rows": n,
        "tokens": tokens,
        "hidden_size": int(cfg.hidden_size),
        "dtype": dtype,
        "bytes_per_token": per_token,
        "estimated_bytes": tokens * per_token,
        "estimated_human": _human(tokens * per_token),
    }


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@torch.no_grad()
def write_hidden_states(
    target: Path | str,
    dataset: Path | str,
    out_dir: Path | str,
    *,
    rows_per_shard: int = _HIDDEN.rows_per_shard,
    dtype: str = _HIDDEN.dtype,
    max_rows: int | None = _HIDDEN.max_rows,
    max_length: int = _TRAIN.max_length,
    aux_layer_ids: list[int] | None = None,
    device: str = "cpu",
    trust_remote_code: bool = False,
    log: Callable[[str], Any] = print,
    extra_manifest: dict | None = None,
) -> dict:
    """Run the target over the tokenized rows and write sharded features (atomically, as a whole)."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    from .data import load_tokenized

    t0 = time.time()
    out_dir = Path(out_dir)
    est = estimate_size(target, dataset, dtype=dtype, max_rows=max_rows, max_length=max_length)
    log(
        f"offline hidden states: {est['rows']} rows, {est['tokens']} tokens → about {est['estimated_human']} "
        f"({est['bytes_per_token']} B/token, {dtype}) into {out_dir}"
    )
    st_dtype = _dtype(dtype)
    model = (
        AutoModelForCausalLM.from_pretrained(
            str(target), dtype=torch.float32 if device == "cpu" else st_dtype, trust_remote_code=trust_remote_code
        )
        .to(device)
        .eval()
    )
    aux = _aux_layers(model.config, aux_layer_ids)
    rows = load_tokenized(dataset, max_length)
    n = est["rows"]
    shards: list[dict] = []
    total_bytes = 0
    with staged_dir(out_dir) as tmp:
        for s, start in enumerate(range(0, n, max(1, rows_per_shard))):
            idx = list(range(start, min(n, start + rows_per_shard)))
            ids_l, mask_l, aux_l, hid_l, offsets = [], [], [], [], [0]
            for i in idx:
                ids = rows.input_ids[i]
                out = model(input_ids=ids[None].to(device), output_hidden_states=True, use_cache=False)
                hs = out.hidden_states
                aux_l.append(torch.cat([hs[j + 1][0] for j in aux], dim=-1).to("cpu", st_dtype))
                hid_l.append(hs[-1][0].to("cpu", st_dtype))
                ids_l.append(ids)
                mask_l.append(rows.loss_mask[i].to(torch.int8))
                offsets.append(offsets[-1] + int(ids.numel()))
            tensors = {
                "input_ids": torch.cat(ids_l).contiguous(),
                "loss_mask": torch.cat(mask_l).contiguous(),
                "aux_hidden_states": torch.cat(aux_l).contiguous(),
                "hidden_states": torch.cat(hid_l).contiguous(),
                "offsets": torch.tensor(offsets, dtype=torch.long),
            }
            name = f"shard_{s:05d}.safetensors"
            save_file(tensors, str(tmp / name), metadata={"format": FORMAT})
            size = (tmp / name).stat().st_size
            total_bytes += size
            shards.append(
                {
                    "file": name,
                    "rows": len(idx),
                    "tokens": offsets[-1],
                    "ids": [rows.ids[i] for i in idx],
                    "bytes": size,
                    "sha256": sha256_file(tmp / name),
                }
            )
            log(
                f"shard {name}: {len(idx)} rows, {offsets[-1]} tokens, {_human(size)} "
                f"({start + len(idx)}/{n} rows, {time.time() - t0:.0f}s)"
            )
        info = {
            "format": FORMAT,
            "target_path": str(target),
            "dataset_path": str(dataset),
            "aux_layer_ids": aux,
            "hidden_size": int(model.config.hidden_size),
            "num_hidden_layers": int(model.config.num_hidden_layers),
            "vocab_size": int(model.config.vocab_size),
            "dtype": dtype,
            "max_length": max_length,
            "rows": n,
            "tokens": sum(x["tokens"] for x in shards),
            "total_bytes": total_bytes,
            "estimate": est,
            "shards": shards,
            "seconds": round(time.time() - t0, 2),
            "content_version": hashlib.sha256("".join(x["sha256"] for x in shards).encode()).hexdigest()[:24],
            **(extra_manifest or {}),
        }
        write_manifest(tmp, **info)
        os.chmod(tmp, 0o755)
    log(
        f"offline hidden states written: {n} rows, {info['tokens']} tokens, {_human(total_bytes)} in {info['seconds']:.0f}s"
    )
    return info


def _load_target_tensor(target: Path, names: tuple[str, ...]) -> torch.Tensor | None:
    """One tensor from the target's safetensors (single file or index), without loading the rest."""
    from safetensors import safe_open

    index = target / "model.safetensors.index.json"
    files: dict[str, Path] = {}
    if index.exists():
        wm = json.loads(index.read_text())["weight_map"]
        files = {k: target / v for k, v in wm.items()}
    elif (target / "model.safetensors").exists():
        with safe_open(str(target / "model.safetensors"), "pt") as f:
            files = {k: target / "model.safetensors" for k in f.keys()}
    for name in names:
        if name in files:
            with safe_open(str(files[name]), "pt") as f:
                return f.get_tensor(name)
    return None


class _Hidden(list):
    """hidden_states stand-in: only the stored aux layers are available."""

    def __init__(self, n: int, entries: dict[int, torch.Tensor]):
        super().__init__([None] * n)
        for i, t in entries.items():
            self[i] = t

    def __getitem__(self, i):
        v = super().__getitem__(i)
        if v is None:
            raise KeyError(
                f"hidden state {i} was not stored offline (stored: aux layers only); "
                "the training config's aux_layer_ids must match the offline features"
            )
        return v


class _Out:
    def __init__(self, hidden_states, logits):
        self.hidden_states = hidden_states
        self.logits = logits


class OfflineFeatureTarget(nn.Module):
    """The target as `train_draft` sees it, backed by stored features.

    `forward(input_ids, attention_mask)` finds each (unpadded) row by its token content, returns
    the stored aux features at the hidden-state indices of the stored aux layers, and logits =
    lm_head(stored final hidden state). Embeddings and lm_head come from the target's safetensors;
    the full target is never loaded."""

    def __init__(self, hidden_states_dir: Path | str, target_path: Path | str | None = None):
        super().__init__()
        from safetensors import safe_open

        self.dir = Path(hidden_states_dir)
        m_path = self.dir / "manifest.json"
        if not m_path.exists():
            from .errors import TrainFileNotFound

            raise TrainFileNotFound(f"{m_path}: missing (materialize models/target_hidden_states first)")
        self.manifest = json.loads(m_path.read_text())
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"{m_path}: format {self.manifest.get('format')!r} != {FORMAT!r}")
        target = Path(target_path or self.manifest["target_path"])
        self.config = _target_config(target)
        self.aux_layer_ids = list(self.manifest["aux_layer_ids"])
        emb = _load_target_tensor(target, ("model.embed_tokens.weight", "embed_tokens.weight", "model.embed.weight"))
        if emb is None:
            raise ValueError(f"{target}: no embedding tensor (model.embed_tokens.weight) in its safetensors")
        head = _load_target_tensor(target, ("lm_head.weight",))
        if head is None:
            head = emb  # tied embeddings
        self.embed_tokens = nn.Embedding.from_pretrained(emb.float(), freeze=True)
        self.lm_head = nn.Linear(head.shape[1], head.shape[0], bias=False)
        with torch.no_grad():
            self.lm_head.weight.copy_(head.float())
        self.lm_head.requires_grad_(False)
        # row index: token-content hash → (shard file, start, end)
        self._index: dict[str, tuple[str, int, int]] = {}
        self._files: dict[str, Any] = {}
        for sh in self.manifest["shards"]:
            f = safe_open(str(self.dir / sh["file"]), "pt")
            self._files[sh["file"]] = f
            ids = f.get_tensor("input_ids")
            offs = f.get_tensor("offsets").tolist()
            for r in range(len(offs) - 1):
                key = self._key(ids[offs[r] : offs[r + 1]])
                self._index.setdefault(key, (sh["file"], offs[r], offs[r + 1]))

    @staticmethod
    def _key(ids: torch.Tensor) -> str:
        return hashlib.sha1(ids.to(torch.int64).cpu().numpy().tobytes()).hexdigest()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def _row(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = self._key(ids)
        if key not in self._index:
            raise KeyError(
                f"a training row ({ids.numel()} tokens) is not in the offline features at {self.dir}; "
                "rebuild models/target_hidden_states (dataset or max_length changed)"
            )
        file, a, b = self._index[key]
        f = self._files[file]
        return f.get_slice("aux_hidden_states")[a:b], f.get_slice("hidden_states")[a:b]

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any) -> _Out:
        B, T = input_ids.shape
        device = input_ids.device
        H = int(self.manifest["hidden_size"])
        aux = torch.zeros(B, T, 3 * H, device=device, dtype=self.lm_head.weight.dtype)
        hid = torch.zeros(B, T, H, device=device, dtype=self.lm_head.weight.dtype)
        lengths = attention_mask.sum(-1).tolist() if attention_mask is not None else [T] * B
        for b in range(B):
            n = int(lengths[b])
            a, h = self._row(input_ids[b, :n])
            aux[b, :n] = a.to(device, aux.dtype)
            hid[b, :n] = h.to(device, hid.dtype)
        logits = self.lm_head(hid)
        L = int(self.config.num_hidden_layers)
        entries = {j + 1: aux[..., k * H : (k + 1) * H] for k, j in enumerate(self.aux_layer_ids)}
        return _Out(_Hidden(L + 1, entries), logits)


def offline_training_kwargs(hidden_states_path: Path | str, target_path: Path | str | None = None) -> dict:
    """Extra arguments for `train_draft` that make it train from stored features."""
    t = OfflineFeatureTarget(hidden_states_path, target_path)
    return {"target_model": t}
