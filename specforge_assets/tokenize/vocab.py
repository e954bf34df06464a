"""Draft vocabulary mapping (`d2t` / `t2d`) from loss-bearing token frequencies.

File format = SpecForge's: `torch.save({"d2t": LongTensor[draft], "t2d": BoolTensor[target]})`,
target id = draft id + d2t[draft id].

Selection (deterministic, documented):
  1. count every token id at a position with loss_mask == 1, over all rows;
  2. rank ids by count, descending; ties by first appearance in the dataset (row order, and
     ascending id within a row) — the order SpecForge's `Counter.most_common` gives when it is
     fed the same rows in the same order;
  3. if fewer distinct supervised ids than the draft vocabulary exist, fill up with zero-count
     ids in ascending id order;
  4. sort the chosen ids ascending: draft id i ↔ i-th smallest chosen target id.
`draft_vocab_size` larger than the target vocabulary is clamped to it (reported).

A corpus with no supervised token has no frequency signal: `build_mapping` refuses it
(`VocabError`) instead of writing target ids 0..D-1. A partial fill-up is reported
(`filled_zero_count_ids`, `fill_warning`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import UserError
from ..jsonrows import RowDecodeError, loads_object

NO_ROW = np.iinfo(np.int64).max


class VocabError(ValueError, UserError):
    """The mapping cannot be built from this input (no supervised token, ids outside the target
    vocabulary, a malformed row)."""


def fill_warning(result: dict) -> str | None:
    """The warning for a mapping partly filled with zero-count ids (None when not filled)."""
    n = int(result.get("filled_zero_count_ids") or 0)
    if not n:
        return None
    return (
        f"{n} of {result['draft_vocab_size']} draft vocabulary ids are zero-count fill-up (target ids never "
        f"supervised; only {result['distinct_supervised_tokens']} distinct supervised tokens in the data): "
        "use more data or a smaller draft vocabulary size"
    )


# How `build_mapping` orders the draft vocabulary (recorded in the manifest and the asset's metadata).
TIE_BREAK = "count desc, then first appearance (row order, ascending id in a row); fill-up with zero-count ids in ascending order"


def clamp_warning(result: dict) -> str | None:
    """The warning for a draft vocabulary size clamped to the target's (None when not clamped)."""
    if not result.get("clamped"):
        return None
    return (
        f"draft vocab size {result['requested_draft_vocab_size']} > target vocabulary "
        f"{result['target_vocab_size']}: clamped to {result['draft_vocab_size']}"
    )


class TokenCounter:
    """Accumulates counts and first-appearance rows over batches of (input_ids, loss_mask)."""

    def __init__(self, vocab_size: int):
        self.vocab_size = int(vocab_size)
        self.counts = np.zeros(self.vocab_size, dtype=np.int64)
        self.first = np.full(self.vocab_size, NO_ROW, dtype=np.int64)
        self.rows = 0
        self.total = 0

    def add_flat(self, flat_ids: np.ndarray, flat_mask: np.ndarray, row_lengths: np.ndarray) -> None:
        """A batch given as flattened arrays plus per-row lengths (Arrow list layout)."""
        nrows = len(row_lengths)
        if nrows == 0:
            return
        sel = flat_mask.astype(bool, copy=False)
        ids = flat_ids[sel].astype(np.int64, copy=False)
        if ids.size:
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= self.vocab_size:
                bad = hi if hi >= self.vocab_size else lo
                raise VocabError(
                    f"token id {bad} is outside the target vocabulary (size {self.vocab_size}); "
                    "wrong --target-vocab-size or a different tokenizer?"
                )
            self.counts += np.bincount(ids, minlength=self.vocab_size)
            rows = np.repeat(np.arange(self.rows, self.rows + nrows, dtype=np.int64), row_lengths)[sel]
            # first occurrence of each id in this batch (rows are increasing, so the first flat
            # index is in the earliest row)
            uniq, idx = np.unique(ids, return_index=True)
            r = rows[idx]
            cur = self.first[uniq]
            self.first[uniq] = np.minimum(cur, r)
            self.total += int(ids.size)
        self.rows += nrows


def select(counter: TokenCounter, draft_vocab_size: int) -> dict:
    V = counter.vocab_size
    requested = int(draft_vocab_size)
    D = min(requested, V)
    seen = np.nonzero(counter.counts > 0)[0]
    # order: count desc, first row asc, id asc
    order = np.lexsort((seen, counter.first[seen], -counter.counts[seen]))
    chosen = seen[order][:D]
    filled = 0
    if len(chosen) < D:
        rest = np.setdiff1d(np.arange(V, dtype=np.int64), chosen, assume_unique=False)
        need = D - len(chosen)
        chosen = np.concatenate([chosen, rest[:need]])
        filled = need
    used = np.sort(chosen.astype(np.int64))
    d2t = used - np.arange(D, dtype=np.int64)
    t2d = np.zeros(V, dtype=bool)
    t2d[used] = True
    covered = int(counter.counts[used].sum())
    return {
        "d2t": d2t,
        "t2d": t2d,
        "draft_vocab_size": D,
        "requested_draft_vocab_size": requested,
        "clamped": D < requested,
        "target_vocab_size": V,
        "distinct_supervised_tokens": int(len(seen)),
        "filled_zero_count_ids": int(filled),
        "supervised_tokens": counter.total,
        "rows": counter.rows,
        "coverage": (covered / counter.total) if counter.total else 0.0,
    }


def save_mapping(result: dict, path: Path | str) -> Path:
    import torch

    from ..fileio import atomic_write

    import io

    path = Path(path)
    buf = io.BytesIO()  # serialized in memory first: a full disk is then a plain OSError naming the file
    torch.save({"d2t": torch.from_numpy(result["d2t"]).long(), "t2d": torch.from_numpy(result["t2d"]).bool()}, buf)
    with atomic_write(path, "wb") as f:
        f.write(buf.getbuffer())
    return path


def iter_parquet_batches(paths: Iterable[Path]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    import pyarrow.parquet as pq

    for p in paths:
        pf = pq.ParquetFile(p)
        for batch in pf.iter_batches(batch_size=65536, columns=["input_ids", "loss_mask"]):
            ids_col = batch.column(0)
            mask_col = batch.column(1)
            offs = np.asarray(ids_col.offsets)
            lens = np.diff(offs)
            flat_ids = np.asarray(ids_col.values)[offs[0] : offs[-1]]
            moffs = np.asarray(mask_col.offsets)
            flat_mask = np.asarray(mask_col.values)[moffs[0] : moffs[-1]]
            yield flat_ids, flat_mask, lens


def iter_jsonl_batches(path: Path | str, batch_rows: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Rows of a pre-tokenized JSONL (tokenize's output) under the one JSON-row rule. A malformed
    row is an error naming file and line (a mapping from part of the data would be wrong
    silently)."""
    ids, masks, lens = [], [], []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = loads_object(line)
            except RowDecodeError as e:
                raise VocabError(f"{path}:{lineno}: {e}") from None
            a, m = row.get("input_ids"), row.get("loss_mask")
            if not isinstance(a, list) or not isinstance(m, list):
                raise VocabError(f"{path}:{lineno}: expected a JSON object with input_ids and loss_mask lists")
            if a and isinstance(a[0], list):  # [1, L] tensors-as-lists
                a, m = a[0], (m[0] if m and isinstance(m[0], list) else m)
            if len(a) != len(m):
                raise VocabError(f"{path}:{lineno}: input_ids and loss_mask lengths differ ({len(a)} vs {len(m)})")
            for name, values in (("input_ids", a), ("loss_mask", m)):
                bad = next((i for i, x in enumerate(values) if type(x) is not int or x < 0), None)
                if bad is not None:
                    raise VocabError(
                        f"{path}:{lineno}: field {name}[{bad}] must be a non-negative integer token id / "
                        f"mask value, got {values[bad]!r}"
                    )
            ids.extend(a)
            masks.extend(m)
            lens.append(len(a))
            if len(lens) >= batch_rows:
                yield np.asarray(ids, dtype=np.int64), np.asarray(masks, dtype=np.int8), np.asarray(lens)
                ids, masks, lens = [], [], []
    if lens:
        yield np.asarray(ids, dtype=np.int64), np.asarray(masks, dtype=np.int8), np.asarray(lens)


def build_mapping(
    batches: Iterable, target_vocab_size: int, draft_vocab_size: int, source: str = "the tokenized dataset"
) -> dict:
    """Count and select (`draft_vocab_size`: configs/tokenize.yaml `vocab_mapping.draft_vocab_size`
    or the CLI's flag, which defaults to it). Refuses (`VocabError`) a corpus without one supervised token: there is no
    frequency signal, and the fill-up would make the draft vocabulary an arbitrary id range."""
    c = TokenCounter(target_vocab_size)
    for flat_ids, flat_mask, lens in batches:
        try:
            c.add_flat(np.asarray(flat_ids), np.asarray(flat_mask), np.asarray(lens))
        except (ValueError, TypeError) as e:
            if isinstance(e, VocabError):
                raise
            raise VocabError(f"{source}: input_ids / loss_mask are not integer lists ({e})") from e
    if c.total == 0:
        if c.rows == 0:
            raise VocabError(f"no supervised tokens in {source} (no rows): nothing to build a draft vocabulary from")
        raise VocabError(
            f"no supervised tokens in {source} ({c.rows} rows, all loss masks zero): check max_length / chat template"
        )
    return select(c, draft_vocab_size)
