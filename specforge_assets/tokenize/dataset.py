"""Tokenize a conversation JSONL into Parquet shards + SpecForge's pre-tokenized JSONL.

Streaming: rows are read, tokenized and written in bounded batches (memory does not grow with
the input), optionally over several worker processes (order kept). Usable without Dagster:

    from specforge_assets.tokenize.dataset import tokenize_jsonl
    stats = tokenize_jsonl("mix/train.jsonl", "path/to/tokenizer", "qwen", "out/", max_length=2048)
"""

from __future__ import annotations

import array
import concurrent.futures as cf
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..errors import UserError
from ..fileio import atomic_write, sha256_file, sha256_json, staged_dir
from ..jsonrows import RowDecodeError, loads_object, salvage_id
from ..sources.errors import RowError
from ..sources.formats import apply_row_system
from .core import NO_ASSISTANT_TURN, Preprocessor, TokenizeError, TokenizeOptions, error_kind
from .settings import TokenizeFile
from .templates import ChatTemplate

# Bump when the tokenization code changes its output for the same inputs (part of the cache key).
ALGORITHM_VERSION = "2"  # 2: prompt-only rows refused per row; cut/drop counts in stats.json
TOKENIZER_FILE_PATTERNS = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "*.tiktoken",
    "spiece.model",
    "sentencepiece.bpe.model",
)
BATCH_ROWS = 256
# Library callers get configs/tokenize.yaml's defaults (declared once, in `settings.TokenizeFile`).
_DEFAULTS = TokenizeFile()


class TokenizerLoadError(FileNotFoundError, UserError):
    """The tokenizer cannot be loaded from the given folder / id."""


class InputNotFoundError(FileNotFoundError, UserError):
    """The input file does not exist."""


class NothingToTrainOnError(TokenizeError):
    """The whole input yields no supervised token: refused, nothing is written."""

    def __init__(self, message: str, kind: str = "no supervised tokens"):
        super().__init__(message, kind)


def tokenizer_files(tokenizer_dir: Path | str) -> list[Path]:
    d = Path(tokenizer_dir)
    if not d.is_dir():
        return []
    files: set[Path] = set()
    for pat in TOKENIZER_FILE_PATTERNS:
        files.update(p for p in d.glob(pat) if p.is_file())
    return sorted(files)


def load_tokenizer(path_or_id: Path | str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path_or_id), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TokenizerLoadError(
            f"cannot load a tokenizer from {str(path_or_id)!r}: {first[:300].rstrip('.')}. Pass a local folder with "
            "tokenizer files (tokenizer.json / tokenizer_config.json; the model hub may be unreachable)"
        ) from e


def cache_key(
    data_sha256: str,
    tokenizer_path: Path | str,
    chat_template_text: str | None,
    template: ChatTemplate,
    options: TokenizeOptions,
) -> dict:
    """The content-addressed key (and its parts): same parts → same output, never recomputed."""
    tfiles = tokenizer_files(tokenizer_path)
    parts = {
        "algorithm_version": ALGORITHM_VERSION,
        "data_sha256": data_sha256,
        "tokenizer_files": {p.name: sha256_file(p) for p in tfiles} or {"id": str(tokenizer_path)},
        "chat_template_sha256": hashlib.sha256((chat_template_text or "").encode()).hexdigest(),
        "template": template.fields(),
        "options": options.as_dict(),
    }
    return {"key": sha256_json(parts)[:32], "parts": parts}


# ---------------------------------------------------------------------------- worker side
_WORKER: dict[str, Any] = {}


def _worker_init(tokenizer_path: str, template: ChatTemplate, options: TokenizeOptions, trust: bool, verify_every: int):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tok = load_tokenizer(tokenizer_path, trust)
    _WORKER["pre"] = Preprocessor(tok, template, options, verify_every=verify_every)


def _process_chunk(rows: list[tuple[int, dict]], pre: Preprocessor | None = None) -> list[tuple]:
    pre = pre or _WORKER["pre"]
    res = pre.process_rows([r for _, r in rows])
    out = []
    for (lineno, row), r in zip(rows, res):
        rid = row.get("id")
        if isinstance(r, Exception):
            out.append((lineno, rid, row.get("source"), None, None, 0, (str(r), error_kind(r)), None, None))
        else:
            out.append(
                (
                    lineno,
                    rid,
                    row.get("source"),
                    r.input_ids,
                    r.loss_mask,
                    r.full_length,
                    r.warnings,
                    r.fallback_render,
                    r.dropped,
                )
            )
    return out


def _read_rows(path: Path) -> Iterator[tuple[int, dict | Exception]]:
    """(line number, row or the error for that line) under the one JSON-row rule
    (`jsonrows.loads_object`: invalid UTF-8, malformed JSON, too deep, lone surrogate)."""
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = loads_object(line)
                if "system" in row:  # LLaMA-Factory's row-level system prompt: the leading system message
                    try:
                        conv = apply_row_system(row)
                    except RowError as e:
                        raise RowDecodeError(e.reason, e.field) from None
                    row = {**{k: v for k, v in row.items() if k != "system"}, "conversations": conv}
            except RowDecodeError as e:
                e.row_id = salvage_id(line)  # type: ignore[attr-defined]
                yield lineno, e
                continue
            yield lineno, row


def _chunks(path: Path, size: int, bad: list) -> Iterator[list[tuple[int, dict]]]:
    chunk = []
    for lineno, row in _read_rows(path):
        if isinstance(row, Exception):
            bad.append((lineno, getattr(row, "row_id", None), None, str(row), error_kind(row)))
            continue
        chunk.append((lineno, row))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _ordered_map(fn, chunks: Iterable, workers: int, init_args) -> Iterator:
    """Map over chunks in order with at most 2×workers chunks in flight (bounded memory)."""
    if workers <= 1:
        _worker_init(*init_args)
        for c in chunks:
            yield fn(c)
        return
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=init_args) as ex:
        pending: list[cf.Future] = []
        it = iter(chunks)
        done = False
        while True:
            while not done and len(pending) < 2 * workers:
                try:
                    pending.append(ex.submit(fn, next(it)))
                except StopIteration:
                    done = True
            if not pending:
                break
            yield pending.pop(0).result()


class _Stats:
    def __init__(self):
        self.rows = 0
        self.tokens = 0
        self.supervised = 0
        self.zero_supervised = 0
        self.truncated = 0
        self.fallback_rows = 0
        self.warn_rows = 0
        self.warning_examples: list[str] = []
        self.lengths = array.array("i")
        self.rows_cut: dict[str, int] = {}  # reason → rows
        self.messages_dropped: dict[str, int] = {}  # reason → messages

    def add_dropped(self, dropped: dict | None) -> None:
        for reason, n in (dropped or {}).items():
            self.messages_dropped[reason] = self.messages_dropped.get(reason, 0) + n
            self.rows_cut[reason] = self.rows_cut.get(reason, 0) + 1


def summary_line(stats: dict) -> str | None:
    """One stderr line naming every cut, skip and drop of a run (None when there was none):
    ``tokenize: 3 rows cut at consecutive assistant turns (4 messages dropped), ...``."""

    def n_rows(n: int) -> str:
        return f"{n} row{'s' if n != 1 else ''}"

    parts = []
    cut = stats.get("rows_cut") or {}
    dropped = stats.get("messages_dropped_by_reason") or {}
    labels = {
        "cut_consecutive_assistant": "cut at consecutive assistant turns",
        "cut_role_order": "cut at an out-of-order message",
        "leading_non_user": "with messages dropped before the first user turn",
        "not_an_object": "with non-object messages dropped",
    }
    for reason, label in labels.items():
        if cut.get(reason):
            parts.append(f"{n_rows(cut[reason])} {label} ({dropped.get(reason, 0)} messages dropped)")
    if stats.get("truncated_rows"):
        parts.append(f"{n_rows(stats['truncated_rows'])} truncated at max_length {stats.get('max_length')}")
    if stats.get("zero_supervised_rows"):
        parts.append(f"{n_rows(stats['zero_supervised_rows'])} with no supervised token")
    for kind, n in sorted((stats.get("rows_failed_by_reason") or {}).items(), key=lambda kv: (-kv[1], kv[0])):
        what = f"{kind}: regenerate this source first" if kind == NO_ASSISTANT_TURN else kind
        parts.append(f"{n_rows(n)} skipped ({what})")
    if not parts:
        return None
    return "tokenize: " + ", ".join(parts) + f" (of {stats.get('rows_in', 0)} rows in; see errors.jsonl / stats.json)"


def _refusal(input_path: Path, st: "_Stats", bad: list, template: ChatTemplate) -> str | None:
    """Why a run over `input_path` must not publish anything (None: it may)."""
    if st.supervised > 0:
        return None
    n_in = st.rows + len(bad)
    if n_in == 0:
        return f"{input_path} has no rows: nothing to tokenize"
    kinds: dict[str, int] = {}
    for b in bad:
        kinds[b[4]] = kinds.get(b[4], 0) + 1
    if st.rows == 0:
        if kinds.get(NO_ASSISTANT_TURN) == n_in:
            return (
                f"no assistant turn in any of the {n_in} rows of {input_path}: prompt-only rows (user turns "
                "only) supervise nothing; regenerate this source first (specforge-assets regenerate)"
            )
        top = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1])[:4])
        return f"no row of {input_path} could be tokenized ({n_in} rows: {top}); see the skipped lines"
    hint = "check max_length / chat template"
    if st.fallback_rows:
        hint += " (the tokenizer has no chat template: SpecForge's fallback rendering was used)"
    elif st.truncated == st.rows:
        hint += " (every row was truncated at max_length {max_length})"  # filled in by the caller
    else:
        hint += f" (the assistant markers of chat template {template.name!r} never match the rendered text?)"
    return f"no supervised tokens in {input_path} ({st.rows} rows, all loss masks zero): {hint}"


def _id_for(rid: Any, lineno: int) -> str:
    return str(rid) if rid is not None else f"line-{lineno}"


def tokenize_jsonl(
    input_path: Path | str,
    tokenizer_path: Path | str,
    template: ChatTemplate,
    output_dir: Path | str,
    options: TokenizeOptions | None = None,
    workers: int = _DEFAULTS.workers,
    shard_rows: int = _DEFAULTS.shard_rows,
    trust_remote_code: bool = False,
    write_parquet: bool = True,
    export_jsonl: str | None = "train.jsonl",
    preprocessor: Preprocessor | None = None,
    verify_every: int = _DEFAULTS.verify_every,
) -> dict:
    """Tokenize `input_path` into `output_dir` (written atomically as a whole). Returns stats.
    `workers` (processes tokenizing chunks of rows; 1: in this process only), `shard_rows` (rows
    per Parquet shard) and `verify_every` (every N-th row re-checked by the straightforward
    algorithm; 0: off) default to configs/tokenize.yaml's (`settings.TokenizeFile`); the asset
    passes the file's values."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    options = options or TokenizeOptions()
    input_path, output_dir = Path(input_path), Path(output_dir)
    if not input_path.is_file():
        raise InputNotFoundError(
            f"input not found: {input_path} (check the path; command-line paths are relative to the current directory)"
        )
    with staged_dir(output_dir) as tmp:
        t0 = time.time()
        st = _Stats()
        bad: list = []  # (lineno, id, source, reason, kind)
        schema = pa.schema(
            [
                ("id", pa.string()),
                ("source", pa.string()),
                ("input_ids", pa.list_(pa.int32())),
                ("loss_mask", pa.list_(pa.int8())),
                ("length", pa.int32()),
                ("supervised_tokens", pa.int32()),
                ("full_length", pa.int32()),
                ("truncated", pa.bool_()),
            ]
        )
        shard_idx = 0
        writer = None
        in_shard = 0
        shards: list[str] = []
        buf: dict[str, list] = {k: [] for k in schema.names}
        jf = open(tmp / export_jsonl, "w", encoding="utf-8") if export_jsonl else None

        def flush():
            if not buf["id"]:
                return
            table = pa.table({k: buf[k] for k in schema.names}, schema=schema)
            writer.write_table(table, row_group_size=8192)
            for k in buf:
                buf[k].clear()

        try:
            init_args = (str(tokenizer_path), template, options, trust_remote_code, verify_every)
            if preprocessor is not None:
                results = (_process_chunk(c, preprocessor) for c in _chunks(input_path, BATCH_ROWS, bad))
            else:
                results = _ordered_map(_process_chunk, _chunks(input_path, BATCH_ROWS, bad), workers, init_args)
            for chunk in results:
                for lineno, rid, source, ids, mask, full_len, info, fb, dropped in chunk:
                    if ids is None:
                        bad.append((lineno, rid, source, *info))
                        continue
                    st.add_dropped(dropped)
                    sid = _id_for(rid, lineno)
                    n = len(ids)
                    sup = sum(mask)
                    st.rows += 1
                    st.tokens += n
                    st.supervised += sup
                    st.zero_supervised += sup == 0
                    st.truncated += full_len > n
                    st.fallback_rows += bool(fb)
                    if info:
                        st.warn_rows += 1
                        if len(st.warning_examples) < 5:
                            st.warning_examples.append(f"{sid}: {info[0]}")
                    st.lengths.append(n)
                    if write_parquet:
                        if writer is None or in_shard >= shard_rows:
                            flush()
                            if writer is not None:
                                writer.close()
                            name = f"part-{shard_idx:05d}.parquet"
                            writer = pq.ParquetWriter(tmp / name, schema, compression="zstd")
                            shards.append(name)
                            shard_idx += 1
                            in_shard = 0
                        buf["id"].append(sid)
                        buf["source"].append(source if isinstance(source, str) else None)
                        buf["input_ids"].append(ids)
                        buf["loss_mask"].append(mask)
                        buf["length"].append(n)
                        buf["supervised_tokens"].append(sup)
                        buf["full_length"].append(full_len)
                        buf["truncated"].append(full_len > n)
                        in_shard += 1
                        if len(buf["id"]) >= 4096:
                            flush()
                    if jf is not None:
                        jf.write(
                            '{"id": '
                            + json.dumps(sid)
                            + ', "input_ids": ['
                            + ", ".join(map(str, ids))
                            + '], "loss_mask": ['
                            + ", ".join(map(str, mask))
                            + "]}\n"
                        )
            if writer is not None:
                flush()
                writer.close()
                writer = None
            if jf is not None:
                jf.flush()
                os.fsync(jf.fileno())
                jf.close()
                jf = None
            bad.sort(key=lambda b: b[0])
            refused = _refusal(input_path, st, bad, template)
            if refused:
                err = NothingToTrainOnError(refused.replace("{max_length}", str(options.max_length)))
                err.skipped = [{"line": b[0], "id": b[1], "reason": b[3]} for b in bad[:10]]  # type: ignore[attr-defined]
                raise err
            failed_by_reason: dict[str, int] = {}
            with atomic_write(tmp / "errors.jsonl") as f:
                for lineno, rid, source, reason, kind in bad:
                    failed_by_reason[kind] = failed_by_reason.get(kind, 0) + 1
                    f.write(
                        json.dumps({"line": lineno, "id": rid, "source": source, "reason": reason, "kind": kind}) + "\n"
                    )
            stats = {
                "rows_in": st.rows + len(bad),
                "rows": st.rows,
                "rows_failed": len(bad),
                "rows_failed_by_reason": failed_by_reason,
                "rows_no_assistant_turn": failed_by_reason.get(NO_ASSISTANT_TURN, 0),
                "rows_cut": dict(sorted(st.rows_cut.items())),
                "rows_cut_consecutive_assistant": st.rows_cut.get("cut_consecutive_assistant", 0),
                "messages_dropped": sum(st.messages_dropped.values()),
                "messages_dropped_by_reason": dict(sorted(st.messages_dropped.items())),
                "tokens": st.tokens,
                "supervised_tokens": st.supervised,
                "supervised_fraction": (st.supervised / st.tokens) if st.tokens else 0.0,
                "zero_supervised_rows": st.zero_supervised,
                "truncated_rows": st.truncated,
                "fallback_render_rows": st.fallback_rows,
                "rows_with_warnings": st.warn_rows,
                "warning_examples": st.warning_examples,
                "max_length": options.max_length,
                "max_row_length": max(st.lengths) if st.lengths else 0,
                "shards": shards,
                "seconds": round(time.time() - t0, 3),
                "workers": workers,
            }
            with atomic_write(tmp / "stats.json") as f:
                json.dump(stats, f, indent=2)
            with atomic_write(tmp / "lengths.bin", "wb") as f:
                st.lengths.tofile(f)
            return stats
        finally:
            if writer is not None:
                writer.close()
            if jf is not None:
                jf.close()


def read_lengths(output_dir: Path | str) -> array.array:
    a = array.array("i")
    p = Path(output_dir) / "lengths.bin"
    if p.exists():
        with open(p, "rb") as f:
            a.frombytes(f.read())
    return a
