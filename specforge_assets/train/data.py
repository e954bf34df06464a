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

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..jsonrows import RowDecodeError, loads_object
from .errors import TrainFileNotFound, TrainInputError


@dataclass
class TokenizedRows:
    ids: list[str]
    input_ids: list[torch.Tensor]
    loss_mask: list[torch.Tensor]
    source_files: list[str]
    skipped_no_supervision: int = 0
    truncated: int = 0
    skipped_unreadable: int = 0  # rows the JSON-row rule refused (lone surrogate, too deep, ...)
    unreadable_examples: list = field(default_factory=list)
    supervised_tokens: int = 0

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
        raise TrainInputError(f"{path}: unsupported dataset file (want .parquet or .jsonl)")
    if not path.is_dir():
        raise TrainFileNotFound(
            f"{path}: tokenized dataset not found (materialize tokenized/dataset, or pass "
            "--dataset; command-line paths are relative to the current directory)"
        )
    shards = sorted(p for p in path.rglob("*.parquet") if not p.name.startswith("."))
    if shards:
        return "parquet", shards
    for name in ("train.jsonl", "data.jsonl"):
        if (path / name).exists():
            return "jsonl", [path / name]
    raise TrainFileNotFound(f"{path}: no *.parquet shards and no train.jsonl (not a tokenized dataset)")


def _check_row(where: str, ids, mask) -> None:
    if ids is None or mask is None:
        raise TrainInputError(f"{where}: missing field {'input_ids' if ids is None else 'loss_mask'}")
    if len(ids) != len(mask):
        raise TrainInputError(f"{where}: field loss_mask has length {len(mask)} but input_ids has {len(ids)}")


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
            raise TrainInputError(f"{where}: field loss_mask must hold only 0/1")
        if vocab_size is not None and t_ids.numel() and (int(t_ids.max()) >= vocab_size or int(t_ids.min()) < 0):
            raise TrainInputError(f"{where}: field input_ids has ids outside the target vocab [0, {vocab_size})")
        # a trainable position needs the anchor and the predicted token supervised (see loss.py)
        if t_mask.numel() < 2 or not bool((t_mask[:-1] * t_mask[1:]).any()):
            rows.skipped_no_supervision += 1
            return
        rows.supervised_tokens += int(t_mask.sum())
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
                    raise TrainInputError(f"{f}: missing column {need!r} (have {schema.names})")
            table = pq.read_table(f, columns=cols).to_pydict()
            n = len(table["input_ids"])
            rid = table.get("id") or [f"{f.name}:{i}" for i in range(n)]
            for i in range(n):
                add(f"{f} row {i} (id={rid[i]})", rid[i], table["input_ids"][i], table["loss_mask"][i])
    else:
        for f in files:
            with open(f, "rb") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        row = loads_object(line)
                    except RowDecodeError as e:  # one unreadable row is skipped and counted
                        rows.skipped_unreadable += 1
                        if len(rows.unreadable_examples) < 5:
                            rows.unreadable_examples.append(f"{f}:{lineno}: {e}")
                        continue
                    add(
                        f"{f}:{lineno} (id={row.get('id')})",
                        row.get("id", f"{f.name}:{lineno}"),
                        row.get("input_ids"),
                        row.get("loss_mask"),
                    )
    if not rows.input_ids:
        raise TrainInputError(
            no_trainable_rows_message(dataset_path, rows.skipped_no_supervision, rows.skipped_unreadable)
        )
    return rows


def no_trainable_rows_message(dataset_path, no_supervision: int, unreadable: int = 0) -> str:
    """The refusal for a dataset a draft cannot learn anything from."""
    n = no_supervision + unreadable
    if n == 0:
        return f"no rows in {dataset_path}: nothing to train on (tokenize a non-empty mix first)"
    what = f"{no_supervision} without two consecutive supervised tokens"
    if unreadable:
        what += f", {unreadable} unreadable"
    return (
        f"no trainable rows in {dataset_path} ({n} rows: {what}): no supervised tokens to train on; "
        "check max_length / chat template of the tokenize step"
    )


def check_trainable(dataset_path: str | Path) -> dict:
    """Refuse (`TrainInputError`) a dataset with zero rows or zero supervised tokens before a
    training run is launched. Reads only the loss masks; returns {rows, supervised_tokens}."""
    path = Path(dataset_path)
    kind, files = _dataset_files(path)
    n_rows = sup = 0
    if kind == "parquet":
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        for f in files:
            if "loss_mask" not in pq.read_schema(f).names:
                raise TrainInputError(f"{f}: missing column 'loss_mask'")
            pf = pq.ParquetFile(f)
            for batch in pf.iter_batches(columns=["loss_mask"], batch_size=65536):
                col = batch.column(0)
                n_rows += len(col)
                flat = pc.list_flatten(col)
                sup += int(pc.sum(flat).as_py() or 0) if len(flat) else 0
    else:
        for f in files:
            with open(f, "rb") as fh:
                for line in fh:
                    if not line.strip():
                        continue
                    n_rows += 1
                    try:
                        m = loads_object(line).get("loss_mask")
                    except RowDecodeError:
                        continue
                    if isinstance(m, list) and m and isinstance(m[0], list):
                        m = m[0]
                    if isinstance(m, list):
                        sup += sum(1 for x in m if x == 1)
    if n_rows == 0 or sup == 0:
        if n_rows == 0:
            raise TrainInputError(f"no rows in {dataset_path}: nothing to train on (tokenize a non-empty mix first)")
        raise TrainInputError(
            f"no supervised tokens in {dataset_path} ({n_rows} rows, all loss masks zero): "
            "nothing to train on; check max_length / chat template of the tokenize step"
        )
    return {"rows": n_rows, "supervised_tokens": sup}


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
