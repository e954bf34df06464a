"""Reading the tokenized dataset for training (parquet shards or SpecForge pre-tokenised JSONL).

Accepted ``dataset_path``:
* a directory with ``*.parquet`` shards (searched recursively, read in sorted path order) with
  columns ``input_ids`` and ``loss_mask`` (lists of ints) and optionally ``id``;
* a single ``.parquet`` file;
* a ``.jsonl`` file (or a directory holding ``train.jsonl`` and no parquet) with rows
  ``{"input_ids": [...], "loss_mask": [...]}`` (SpecForge's ``prompts_path`` format).

Rows are truncated to ``max_length``. Rows with no trainable position left (fewer than two
consecutive supervised tokens) are skipped and counted.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class TokenizedRows:
    ids: list[str]
    input_ids: list[torch.Tensor]
    loss_mask: list[torch.Tensor]
    source_files: list[str]
    skipped_no_supervision: int = 0
    truncated: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_tokens(self) -> int:
        return sum(int(x.numel()) for x in self.input_ids)


def _dataset_files(path: Path) -> tuple[str, list[Path]]:
    if path.is_file():
        if path.suffix == ".parquet":
            return "parquet", [path]
        if path.suffix in (".jsonl", ".json"):
            return "jsonl", [path]
        raise ValueError(f"{path}: unsupported dataset file (want .parquet or .jsonl)")
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: tokenized dataset not found")
    shards = sorted(p for p in path.rglob("*.parquet") if not p.name.startswith("."))
    if shards:
        return "parquet", shards
    for name in ("train.jsonl", "data.jsonl"):
        if (path / name).exists():
            return "jsonl", [path / name]
    raise FileNotFoundError(f"{path}: no *.parquet shards and no train.jsonl")


def _check_row(where: str, ids, mask) -> None:
    if ids is None or mask is None:
        raise ValueError(f"{where}: missing field {'input_ids' if ids is None else 'loss_mask'}")
    if len(ids) != len(mask):
        raise ValueError(f"{where}: field loss_mask has length {len(mask)} but input_ids has {len(ids)}")


def load_tokenized(dataset_path: str | Path, max_length: int, *, vocab_size: int | None = None) -> TokenizedRows:
    path = Path(dataset_path)
    kind, files = _dataset_files(path)
    rows = TokenizedRows([], [], [], [str(f) for f in files])

    def add(where: str, rid, ids, mask) -> None:
        _check_row(where, ids, mask)
        if len(ids) > max_length:
            rows.truncated += 1
            ids, mask = ids[:max_length], mask[:max_length]
        t_ids = torch.as_tensor(ids, dtype=torch.long)
        t_mask = torch.as_tensor(mask, dtype=torch.long)
        if t_mask.numel() and not bool(((t_mask == 0) | (t_mask == 1)).all()):
            raise ValueError(f"{where}: field loss_mask must hold only 0/1")
        if vocab_size is not None and t_ids.numel() and (int(t_ids.max()) >= vocab_size or int(t_ids.min()) < 0):
            raise ValueError(f"{where}: field input_ids has ids outside the target vocab [0, {vocab_size})")
        # a trainable position needs the anchor and the predicted token supervised (see loss.py)
        if t_mask.numel() < 2 or not bool((t_mask[:-1] * t_mask[1:]).any()):
            rows.skipped_no_supervision += 1
            return
        rows.ids.append(str(rid))
        rows.input_ids.append(t_ids)
        rows.loss_mask.append(t_mask)

    if kind == "parquet":
        import pyarrow.parquet as pq

        for f in files:
            schema = pq.read_schema(f)
            cols = [c for c in ("id", "input_ids", "loss_mask") if c in schema.names]
            for need in ("input_ids", "loss_mask"):
                if need not in cols:
                    raise ValueError(f"{f}: missing column {need!r} (have {schema.names})")
            table = pq.read_table(f, columns=cols).to_pydict()
            n = len(table["input_ids"])
            rid = table.get("id") or [f"{f.name}:{i}" for i in range(n)]
            for i in range(n):
                add(f"{f} row {i} (id={rid[i]})", rid[i], table["input_ids"][i], table["loss_mask"][i])
    else:
        for f in files:
            with open(f, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{f}:{lineno}: invalid JSON: {e.msg}") from e
                    add(f"{f}:{lineno} (id={row.get('id')})", row.get("id", f"{f.name}:{lineno}"),
                        row.get("input_ids"), row.get("loss_mask"))
    if not rows.input_ids:
        raise ValueError(f"{dataset_path}: no trainable rows (all {rows.skipped_no_supervision} rows lack supervised tokens)")
    return rows


class TokenizedDataset(torch.utils.data.Dataset):
    def __init__(self, rows: TokenizedRows):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.rows.input_ids[i], "loss_mask": self.rows.loss_mask[i]}


def collate(batch: list[dict], pad_id: int = 0, multiple_of: int = 1) -> dict:
    """Right-pad to the batch's longest row (rounded up to `multiple_of`)."""
    T = max(int(b["input_ids"].numel()) for b in batch)
    T = -(-T // multiple_of) * multiple_of
    B = len(batch)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    attn = torch.zeros((B, T), dtype=torch.long)
    for i, b in enumerate(batch):
        n = b["input_ids"].numel()
        ids[i, :n] = b["input_ids"]
        mask[i, :n] = b["loss_mask"]
        attn[i, :n] = 1
    return {"input_ids": ids, "loss_mask": mask, "attention_mask": attn}
