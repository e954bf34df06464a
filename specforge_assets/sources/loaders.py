"""Reading raw rows: local files (Parquet / JSONL / JSON) and hub datasets through `datasets`.

Everything is streamed in batches with provenance (file, row) so that a bad row can be
reported or quarantined precisely:
- Parquet: pyarrow batches (the same rows `datasets.Dataset.from_parquet` gives, without the
  Arrow cache copy).
- JSON Lines for presets: pyarrow's JSON reader (the rows SpecForge's `--data-path` loader,
  the HF `json` builder, yields, without its cache copy); a JSON array: Python objects.
- JSON/JSONL for custom sources: a strict line reader; a malformed line, invalid UTF-8 or a
  non-object becomes a `BadRow` (quarantined with file and line), never a silent drop.
- Hub ids (or a local folder laid out like a hub repo): `datasets.load_dataset(id, config,
  split=...)`; offline / unreachable → `HubUnavailableError` naming the source and suggesting a
  local path.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from .. import jsonrows, paths
from .errors import HubUnavailableError, SourceError

SUFFIXES = (".parquet", ".jsonl", ".json")
SAMPLE_PREFIX = "sample:"
BATCH_ROWS = 4096


@dataclass
class BadRow:
    """A raw record that could not even be parsed (kept for the quarantine file)."""

    reason: str
    raw: str | None = None
    field: str | None = None


class RawBatch:
    """Rows of one file with their positions; Arrow-backed batches build dicts only on demand."""

    __slots__ = ("file", "rownums", "part", "arrow", "_rows")

    def __init__(self, file: str, rows: list | None, rownums: Sequence[int], part: str | None = None, arrow=None):
        self.file = file  # file path, or hf://<id>/<config>/<split>
        self._rows = rows  # dict | BadRow
        self.rownums = rownums  # 0-based row within `file` (JSONL: line number - 1)
        self.part = part
        self.arrow = arrow  # pyarrow.RecordBatch when read from Parquet / datasets

    @property
    def rows(self) -> list:
        if self._rows is None:
            try:
                self._rows = self.arrow.to_pylist()
            except UnicodeDecodeError:  # a string that is not UTF-8 (Arrow does not check Parquet's)
                self._rows = arrow_rows_one_by_one(self.arrow)
        return self._rows

    def __len__(self) -> int:
        return len(self.rownums)


def arrow_rows_one_by_one(batch) -> list:
    """`batch.to_pylist()`, except that a row holding a string that is not valid UTF-8 (Parquet
    files and hub datasets are not checked by Arrow) becomes a `BadRow` naming the column,
    instead of failing the whole batch."""
    out: list = []
    names = batch.schema.names
    for i in range(batch.num_rows):
        row = batch.slice(i, 1)
        try:
            out.append(row.to_pylist()[0])
            continue
        except UnicodeDecodeError as e:
            reason = f"invalid UTF-8 at byte {e.start} of a string"
        raw, field = {}, None
        for name in names:
            try:
                raw[name] = row.column(name).to_pylist()[0]
            except UnicodeDecodeError:
                raw[name] = "<not valid UTF-8>"
                field = field or name
        out.append(BadRow(reason, raw=json.dumps(raw, ensure_ascii=False, default=str), field=field))
    return out


# ----------------------------------------------------------------------------- paths


class OutsideLinkError(SourceError):
    """A path under a trusted folder is (or passes through) a link whose target lies outside it."""


INCOMING_HINT = " (the drop folder only takes real files, or links that stay inside it)"
DATA_ROOT_HINT = (
    " (a relative data_path must stay inside the data root; if this link is intended, set "
    "`allow_outside_links: true` on the source in configs/sources.yaml, or write the absolute path)"
)


def _inside(path: Path, base: Path) -> bool:
    return path == base or base in path.parents


def check_link(
    path: str | os.PathLike, trusted_root: str | os.PathLike | None, what: str = "path", hint: str = ""
) -> Path:
    """THE rule for a path under a trusted folder (the incoming drop folder, the data root, the
    shipped sample folder): after following every link on the way, `path` must still lie inside
    `trusted_root`. Returns the resolved path; raises `OutsideLinkError` naming the path, where
    it leads and the rule. `trusted_root=None`: no restriction (an absolute path the user wrote).

    Every place that lists or reads such paths goes through here: the file-drop sensor's listing
    (`sources.config.scan_incoming`, via `check_tree`), `resolve_source` for configured sources,
    and the readers (`resolve_data_path`, `_data_files`, `discover_files`)."""
    resolved = Path(path).resolve()
    if trusted_root is None:
        return resolved
    base = Path(trusted_root).resolve()
    if not _inside(resolved, base):
        lexical = Path(os.path.abspath(path))
        how = (
            "is a link (or inside a linked folder) leading to"
            if _inside(lexical, Path(os.path.abspath(trusted_root))) or _inside(lexical, base)
            else "resolves to"
        )
        raise OutsideLinkError(
            f"{what}: refused {path}: it {how} {resolved}, outside {base}; links may not leave {base}{hint}"
        )
    return resolved


def check_tree(
    path: str | os.PathLike, trusted_root: str | os.PathLike | None, what: str = "path", hint: str = ""
) -> Path:
    """`check_link` for `path` and, when it is a folder, for every entry under it (files, links,
    sub-folders, followed only once they are known to stay inside `trusted_root`)."""
    top = check_link(path, trusted_root, what, hint)
    if trusted_root is None or not top.is_dir():
        return top
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a link back to a folder already walked
            dirnames[:] = []
            continue
        seen.add(real)
        for name in (*dirnames, *filenames):
            check_link(Path(dirpath) / name, trusted_root, what, hint)
    return top


class DataPath(type(Path())):
    """A resolved data path that remembers the folder its links must stay inside
    (`trusted_root`; None: an absolute path the user wrote, no restriction), so that the files
    listed in it later (`_data_files`, `discover_files`) are held to the same rule."""

    trusted_root: Path | None = None


def _hint(trusted_root: Path | None) -> str:
    if trusted_root is None:
        return ""
    if trusted_root.name == "incoming":
        return INCOMING_HINT
    return "" if trusted_root == paths.SAMPLE_DIR.resolve() else DATA_ROOT_HINT


def _with_trust(p: Path, trusted_root: Path | None) -> Path:
    out = DataPath(p)
    out.trusted_root = trusted_root
    return out


def resolve_data_path(value: str | os.PathLike, root: Path | None = None) -> Path:
    """`sample:<rel>` → inside the shipped sample folder; relative → under the data root.

    Links: a `sample:` path must stay inside the sample folder; a relative path inside the data
    root; a path in the drop folder `<root>/incoming` inside that folder (whatever links it or
    its parents are); an absolute path elsewhere is the user's explicit choice. Refusals raise
    `OutsideLinkError` (`check_link`). The result is a `DataPath` carrying that trusted folder."""
    s = str(value)
    if s.startswith(SAMPLE_PREFIX):
        rel = s[len(SAMPLE_PREFIX) :].lstrip("/")
        p = paths.SAMPLE_DIR / rel
        trusted, hint = paths.SAMPLE_DIR, f" (data_path {s!r} escapes the sample folder)"
    else:
        base = Path(root) if root is not None else paths.data_root()
        p = Path(s).expanduser()
        incoming = Path(os.path.abspath(base / "incoming"))
        if not p.is_absolute():
            p, trusted, hint = base / p, base, DATA_ROOT_HINT
        elif _inside(Path(os.path.abspath(p)), incoming) or _inside(Path(os.path.abspath(p)), incoming.resolve()):
            trusted, hint = incoming, INCOMING_HINT
        else:
            trusted, hint = None, ""
    resolved = check_link(p, trusted, f"data_path {s!r}", hint)
    return _with_trust(resolved, Path(trusted).resolve() if trusted is not None else None)


def _data_files(directory: Path, split: str | None) -> list[Path]:
    """The data files of a folder (or of its `data/` sub-folder). When `directory` came from
    `resolve_data_path` every file must stay inside its trusted folder (`check_link`)."""
    trusted = getattr(directory, "trusted_root", None)
    d = directory / "data" if (directory / "data").is_dir() else directory
    files = sorted(
        p for p in d.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES and not p.name.startswith(".")
    )
    for f in files:
        check_link(f, trusted, f"data file in {directory}", _hint(trusted))
    if split and files:
        by_split = [p for p in files if p.stem == split or p.stem.startswith(split + "-")]
        if by_split:
            files = by_split
    suffixes = {p.suffix.lower() for p in files}
    if len(suffixes) > 1:
        raise SourceError(f"{d}: mixed file types {sorted(suffixes)}; keep one format per folder")
    return files


def discover_files(data_path: Path, parts: Sequence, what: str) -> list[tuple[object, list[Path]]]:
    """Map each part (config) of a preset to its local files.

    `data_path` is a file (the whole dataset), or a folder laid out per config
    (`DIR/<config>/*.parquet|*.jsonl|*.json`, or `DIR/<config>.parquet`) or, for a single-config
    dataset, `DIR/*.parquet|*.jsonl|*.json` (a hub snapshot's `DIR/data/` works too).
    """
    if not data_path.exists():
        raise SourceError(f"{what}: data path {data_path} does not exist")
    if data_path.is_file():
        _check_suffix(data_path, what)
        _check_not_empty([data_path], what)
        return [(parts[0] if len(parts) == 1 else None, [data_path])]
    out = []
    multi = len(parts) > 1
    trusted = getattr(data_path, "trusted_root", None)
    for part in parts:
        sub = data_path / part.name
        single = [data_path / f"{part.name}{s}" for s in SUFFIXES if (data_path / f"{part.name}{s}").is_file()]
        if sub.is_dir():
            files = _data_files(_with_trust(check_link(sub, trusted, what, _hint(trusted)), trusted), part.split)
        elif single:
            check_link(single[0], trusted, what, _hint(trusted))
            files = single[:1]
        elif not multi:
            files = _data_files(_with_trust(data_path, trusted), part.split)
        else:
            names = ", ".join(p.name for p in parts)
            raise SourceError(
                f"{what}: {data_path} has no folder or file for config {part.name!r}; expected "
                f"{data_path}/<config>/*.parquet|*.jsonl|*.json (or <config>.parquet) for each of: {names}"
            )
        if not files:
            raise SourceError(f"{what}: no .parquet/.jsonl/.json files in {sub if sub.is_dir() else data_path}")
        _check_not_empty(files, what)
        out.append((part, files))
    return out


def _check_not_empty(files: Sequence[Path], what: str) -> None:
    for f in files:
        if f.stat().st_size == 0:
            raise SourceError(f"{what}: {f} is empty (0 bytes)")


def _check_suffix(p: Path, what: str) -> None:
    if p.suffix.lower() not in SUFFIXES:
        raise SourceError(f"{what}: {p} is not a .parquet, .jsonl or .json file")


# ----------------------------------------------------------------------------- readers


def read_limited(
    sources: Iterable, read: Callable[[Any, int | None], Iterable[RawBatch]], limit: int | None
) -> Iterator[RawBatch]:
    """Batches of `read(source, rows_still_wanted)` over `sources` in order, stopping once `limit`
    rows were yielded (None: everything). Readers cap their own last batch at the limit passed."""
    remaining = limit
    for src in sources:
        for b in read(src, remaining):
            yield b
            if remaining is not None:
                remaining -= len(b)
                if remaining <= 0:
                    return


def read_parquet(path: Path, limit: int | None = None, batch_rows: int = BATCH_ROWS) -> Iterator[RawBatch]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise SourceError(f"{path}: not a readable Parquet file ({e})") from e
    start = 0
    for batch in pf.iter_batches(batch_size=batch_rows):
        if limit is not None and start + batch.num_rows > limit:
            batch = batch.slice(0, limit - start)
        yield RawBatch(str(path), None, range(start, start + batch.num_rows), arrow=batch)
        start += batch.num_rows
        if limit is not None and start >= limit:
            return


def _parse_line(line: bytes) -> dict | BadRow:
    """One JSONL line under the shared row rule (`jsonrows`): a bad line is a `BadRow`."""
    try:
        return jsonrows.loads_object(line)
    except jsonrows.RowDecodeError as e:
        return BadRow(e.reason, raw=_raw_text(line), field=e.field)


def _raw_text(line: bytes | str, limit: int = 100_000) -> str:
    """The raw line for the quarantine file: decoded with replacement (never a lone surrogate,
    which could not be written), cut to `limit` characters."""
    text = line.decode("utf-8", "replace") if isinstance(line, (bytes, bytearray)) else line
    text = text.rstrip("\r\n")
    if jsonrows._SURROGATE.search(text):
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= limit else text[:limit] + f"…[+{len(text) - limit} chars]"


def read_jsonl_strict(path: Path, limit: int | None = None, batch_rows: int = BATCH_ROWS) -> Iterator[RawBatch]:
    """One record per non-blank line; bad lines become `BadRow`s with their line number."""
    rows, nums, n = [], [], 0
    with open(path, "rb") as f:
        for lineno, line in enumerate(f):
            if not line.strip():
                continue
            rows.append(_parse_line(line))
            nums.append(lineno)
            n += 1
            if len(rows) >= batch_rows:
                yield RawBatch(str(path), rows, nums)
                rows, nums = [], []
            if limit is not None and n >= limit:
                break
    if rows:
        yield RawBatch(str(path), rows, nums)


_DATA_WRAPPER = re.compile(r'\s*\{\s*"data"\s*:\s*\[')


def read_json_strict(path: Path, limit: int | None = None) -> Iterator[RawBatch]:
    """A JSON array of objects (or `{"data": [...]}`); a JSON Lines file named .json works too.

    Items are parsed one at a time (`jsonrows.iter_array_items`), so one item that breaks the
    row rule (too deep, lone surrogate) is a `BadRow` and the others are read."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SourceError(f"{path}: invalid UTF-8 at byte {e.start}") from e
    text = text.removeprefix("\ufeff")  # a UTF-8 byte-order mark is not part of the data
    stripped = text.lstrip()
    if not stripped:
        return
    wrapper = _DATA_WRAPPER.match(text)
    if wrapper:  # {"data": [...]}: the rows are the array's items, read one at a time like a bare array
        items = jsonrows.iter_array_items(text[wrapper.end() - 1 :])
    elif not stripped.startswith("["):
        try:
            obj = jsonrows.loads_row(text)
        except jsonrows.RowDecodeError as e:
            if e.reason.startswith("malformed JSON"):
                yield from read_jsonl_strict(path, limit)  # JSON Lines with a .json name
                return
            items = iter([(0, e, text)])  # one object that breaks the row rule
        else:
            if isinstance(obj, dict) and isinstance(obj.get("data"), list):
                items = ((i, v, None) for i, v in enumerate(obj["data"]))
            elif isinstance(obj, dict):
                items = iter([(0, obj, None)])
            else:
                raise SourceError(f"{path}: expected a JSON array of objects, got {type(obj).__name__}")
    else:
        items = jsonrows.iter_array_items(text)
    rows: list = []
    nums: list[int] = []
    try:
        for i, value, bad_raw in items:
            if limit is not None and i >= limit:
                break
            if isinstance(value, jsonrows.RowDecodeError):
                rows.append(BadRow(value.reason, raw=_raw_text(bad_raw or ""), field=value.field))
            elif not isinstance(value, dict):
                rows.append(
                    BadRow(f"expected a JSON object, got {type(value).__name__}", raw=_raw_text(json.dumps(value)))
                )
            else:
                rows.append(value)
            nums.append(i)
            if len(rows) >= BATCH_ROWS:
                yield RawBatch(str(path), rows, nums)
                rows, nums = [], []
    except jsonrows.RowDecodeError as e:
        raise SourceError(f"{path}: {e.reason}") from None
    if rows:
        yield RawBatch(str(path), rows, nums)


def read_strict(path: Path, limit: int | None = None) -> Iterator[RawBatch]:
    """Custom sources: Parquet via pyarrow, JSON/JSONL with the strict readers."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return read_parquet(path, limit)
    if suffix == ".jsonl":
        return read_jsonl_strict(path, limit)
    return read_json_strict(path, limit)


def _datasets_rows(ds, label: str, limit: int | None, part: str | None) -> Iterator[RawBatch]:
    table = ds.data.table if hasattr(ds.data, "table") else ds.data
    if getattr(ds, "_indices", None) is not None:
        table = ds.with_format("arrow")[:]
    return _table_batches(table, label, limit, part)


def _table_batches(table, label: str, limit: int | None, part: str | None) -> Iterator[RawBatch]:
    start = 0
    for batch in table.to_batches(max_chunksize=BATCH_ROWS):
        if limit is not None and start + batch.num_rows > limit:
            batch = batch.slice(0, limit - start)
        yield RawBatch(label, None, range(start, start + batch.num_rows), part, arrow=batch)
        start += batch.num_rows
        if limit is not None and start >= limit:
            return


def read_jsonl_arrow(path: Path, limit: int | None = None) -> Iterator[RawBatch]:
    """JSON Lines through pyarrow's C++ reader (typed Arrow batches, the fast path); a file it
    cannot type (mixed types, a malformed line) is read line by line instead, where a bad line
    becomes a `BadRow` with its line number."""
    import pyarrow as pa
    import pyarrow.json as paj

    try:
        table = paj.read_json(path, read_options=paj.ReadOptions(block_size=8 << 20))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        yield from read_jsonl_strict(path, limit)
        return
    yield from _table_batches(table, str(path), limit, None)


def read_preset_file(path: Path, limit: int | None = None, cache_dir: str | None = None) -> Iterator[RawBatch]:
    """A preset's local file. The rows are those SpecForge's `--data-path` loader (the HF `json`
    builder) yields, read without the `datasets` cache copy: Parquet and JSON Lines as Arrow,
    a JSON array as Python objects. (One difference: a key missing from some messages but
    present in others is a row error here, where `datasets` would fill in null.)"""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return read_parquet(path, limit)
    with open(path, "rb") as f:
        head = f.read(4096).removeprefix(b"\xef\xbb\xbf").lstrip()
    if suffix == ".json" and (head.startswith(b"[") or _DATA_WRAPPER.match(head.decode("utf-8", "replace"))):
        return read_json_strict(path, limit)
    return read_jsonl_arrow(path, limit)


@contextlib.contextmanager
def _quiet_datasets():
    """No per-load progress bars in logs (restored afterwards: other layers may want theirs)."""
    from datasets.utils import logging as dlog

    was = dlog.is_progress_bar_enabled()
    dlog.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            dlog.enable_progress_bar()


def _short(e: BaseException, n: int = 300) -> str:
    s = str(e).strip().splitlines()
    return (s[0] if s else type(e).__name__)[:n]


# ----------------------------------------------------------------------------- hub


def offline_requested(flag: bool | None = None) -> bool:
    if flag:
        return True
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"} or os.environ.get(
        "HF_DATASETS_OFFLINE", ""
    ).strip().lower() in {"1", "true", "yes", "on"}


@contextlib.contextmanager
def _offline_mode(on: bool):
    """Force datasets + huggingface_hub offline for the duration (they read env at import)."""
    if not on:
        yield
        return
    import datasets.config as dcfg

    saved = []
    targets = [(dcfg, "HF_HUB_OFFLINE"), (dcfg, "HF_DATASETS_OFFLINE")]
    with contextlib.suppress(ImportError):
        import huggingface_hub.constants as hcfg

        targets.append((hcfg, "HF_HUB_OFFLINE"))
    for mod, name in targets:
        if hasattr(mod, name):
            saved.append((mod, name, getattr(mod, name)))
            setattr(mod, name, True)
    try:
        yield
    finally:
        for mod, name, value in saved:
            setattr(mod, name, value)


def hub_label(hub_id: str, config: str | None, split: str) -> str:
    return f"hf://{hub_id}/{config or 'default'}/{split}"


def load_hub(
    hub_id: str,
    config: str | None,
    split: str,
    *,
    what: str,
    offline: bool | None = None,
    cache_dir: str | None = None,
):
    """`datasets.load_dataset(hub_id, config, split=split)` with a clear error when it fails.

    `hub_id` may also be a local folder laid out like a hub repo (README configs, data shards).
    """
    import datasets

    off = offline_requested(offline)
    local = Path(hub_id).expanduser()
    is_local = local.is_dir()
    try:
        with _offline_mode(off and not is_local), _quiet_datasets():
            return datasets.load_dataset(str(local) if is_local else hub_id, config, split=split, cache_dir=cache_dir)
    except Exception as e:  # noqa: BLE001 - network, offline, missing config... all end here
        mode = (
            "offline mode is on (HF_HUB_OFFLINE / hub.offline)"
            if off
            else "the hub is unreachable or the dataset is missing"
        )
        cfg = f", config {config!r}" if config else ""
        raise HubUnavailableError(
            f"{what}: cannot load hub dataset {hub_id!r}{cfg}, split {split!r}: {mode} "
            f"({type(e).__name__}: {_short(e)}). Download it elsewhere and point the source at a local "
            f"copy: `data_path: /path/to/files` in configs/sources.yaml (or `--data-path PATH` for "
            f"prepare), a file or a folder laid out as DIR/<config>/*.parquet|*.jsonl|*.json."
        ) from e


def read_hub(
    hub_id, config, split, *, what, limit=None, offline=None, cache_dir=None, part=None
) -> tuple[Iterator[RawBatch], str]:
    ds = load_hub(hub_id, config, split, what=what, offline=offline, cache_dir=cache_dir)
    return _datasets_rows(ds, hub_label(hub_id, config, split), limit, part), getattr(ds, "_fingerprint", "")
