"""Build the training mix from per-source conversation files (no Dagster import).

Reads `<root>/regenerated/<key>/train.jsonl` (falling back to `<root>/sources/<key>/train.jsonl`
when a source has no regenerated output), then, in this order:
  1. validate rows (SpecForge form: `conversations` list or pre-formatted `text`);
  2. exact dedup by a hash of the normalized content (NFC, whitespace collapsed, roles kept);
     optional near-dup: hash of the first N normalized characters (like Model-Optimizer's prefix
     dedup). The first occurrence wins (sources in configs/mix.yaml `sources` order, alphabetical when
     `sources: null`; rows in file order);
  3. per-source caps and weights (no upsampling), sampled with the seed;
  4. seeded shuffle; seeded held-out eval split → `test.jsonl`, rest → `train.jsonl`.
Every dropped row goes to `quarantine.jsonl` with its reason, so
`rows_in == train + test + quarantined`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, model_validator

from ..configmodel import ConfigModel, validate
from ..errors import UserError
from ..fileio import atomic_write, sha256_file
from ..jsonrows import RowDecodeError, loads_object
from ..paths import check_key

NO_ASSISTANT_TURN = "no assistant turn: regenerate this source first"
_ASSISTANT_ROLES = frozenset({"assistant", "gpt", "chatgpt", "bing", "bard"})


class MixError(ValueError, UserError):
    """The mix cannot be built as configured (no data, nothing left after filtering)."""


class MixDedup(ConfigModel):
    exact: bool = Field(default=True, description="drop rows whose normalized content repeats")
    near_dup_prefix_chars: int = Field(default=0, ge=0, description="> 0: also drop rows whose first N chars repeat")


class MixEval(ConfigModel):
    fraction: float = Field(default=0.05, ge=0, lt=1, description="held-out share for test.jsonl")
    min_rows: int = Field(default=32, ge=0)
    max_rows: int | None = Field(default=1000, ge=0)


class MixFile(ConfigModel):
    """configs/mix.yaml. A null value means the default (except `sources`, `total_rows`)."""

    sources: list[str] | None = Field(default=None, description="null: every source with data; or a list of keys")
    weights: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict, description="relative weight per source; unlisted: 1"
    )
    caps: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict, description="max rows per source")
    total_rows: int | None = Field(default=None, ge=0, description="with weights: target mix size (no upsampling)")
    dedup: MixDedup = Field(default_factory=MixDedup)
    seed: int = 42
    eval: MixEval = Field(default_factory=MixEval)
    weight_tolerance: float = Field(default=0.02, ge=0, le=1, description="check: |realized - target share| allowed")

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None or k in ("sources", "total_rows")}
        return data


DEFAULTS: dict[str, Any] = MixFile().model_dump()

_WS = re.compile(r"\s+")


def mix_config(cfg: dict | None) -> dict:
    """configs/mix.yaml as a `MixFile` dict; an unknown key or a bad value raises
    `configmodel.ConfigError` (a ValueError) naming the file and the field."""
    return validate(MixFile, cfg, "configs/mix.yaml").model_dump()


def normalize_text(s: str) -> str:
    return _WS.sub(" ", unicodedata.normalize("NFC", s)).strip()


def row_text(row: dict) -> str:
    """Normalized content of a row (roles + contents, or the pre-formatted text)."""
    if isinstance(row.get("text"), str) and "conversations" not in row:
        return normalize_text(row["text"])
    parts = []
    for m in row.get("conversations") or []:
        if not isinstance(m, dict):
            continue
        role = m.get("role", m.get("from", ""))
        content = m.get("content", m.get("value", ""))
        if not isinstance(content, str):
            content = json.dumps(content, sort_keys=True, ensure_ascii=False)
        parts.append(f"{role}\x1f{normalize_text(content)}")
    return "\x1e".join(parts)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def row_chars(row: dict) -> int:
    if isinstance(row.get("text"), str) and "conversations" not in row:
        return len(row["text"])
    n = 0
    for m in row.get("conversations") or []:
        if isinstance(m, dict):
            c = m.get("content", m.get("value", ""))
            n += len(c) if isinstance(c, str) else len(json.dumps(c))
    return n


def validate_row(row: Any) -> str | None:
    if not isinstance(row, dict):
        return "row is not a JSON object"
    if "conversations" in row:
        conv = row["conversations"]
        if not isinstance(conv, list) or not conv:
            return "field 'conversations' must be a non-empty list"
        assistant = False
        for i, m in enumerate(conv):
            if not isinstance(m, dict):
                return f"conversations[{i}] is not an object"
            if not any(k in m for k in ("role", "from")):
                return f"conversations[{i}] has no 'role'"
            role = m.get("role", m.get("from"))
            if isinstance(role, str) and (role in _ASSISTANT_ROLES or role.startswith("assistant")):
                assistant = True
        if not assistant:  # a prompt-only row (user turns only) supervises nothing
            return NO_ASSISTANT_TURN
        return None
    if isinstance(row.get("text"), str):
        return None
    return "row has neither 'conversations' nor a string 'text'"


def source_file(root: Path, key: str) -> tuple[Path | None, str]:
    """The file a source contributes: regenerated output if present, else the source's."""
    check_key(key)
    regen = root / "regenerated" / key / "train.jsonl"
    if regen.exists():
        return regen, "regenerated"
    src = root / "sources" / key / "train.jsonl"
    if src.exists():
        return src, "sources"
    return None, "missing"


def discover_sources(root: Path) -> list[str]:
    keys = set()
    for layer in ("regenerated", "sources"):
        d = root / layer
        if d.is_dir():
            keys.update(p.name for p in d.iterdir() if (p / "train.jsonl").exists())
    return sorted(keys)


def _eval_count(n: int, cfg: dict) -> int:
    if n <= 1:
        return 0
    f = float(cfg.get("fraction") or 0)
    if f <= 0:
        return 0
    k = max(int(round(n * f)), int(cfg.get("min_rows") or 0))
    if cfg.get("max_rows") is not None:
        k = min(k, int(cfg["max_rows"]))
    return min(k, n // 2)


def target_shares(avail: dict[str, int], weights: dict) -> dict[str, float]:
    """{source: target share of the mix} from configs/mix.yaml `weights` (unlisted: 1.0) over the
    sources with at least one usable row. A source left with no row (e.g. prompt-only rows not
    regenerated yet) takes no share: with one, the largest mix honouring the shares would be
    empty. {} when `weights` is empty (no weighting). Raises ValueError when every source with
    rows has weight 0."""
    if not weights:
        return {}
    w = {k: float(weights.get(k, 1.0)) if n > 0 else 0.0 for k, n in avail.items()}
    tot_w = sum(w.values())
    if tot_w <= 0:
        raise ValueError("configs/mix.yaml: all weights of the sources with rows are zero")
    return {k: v / tot_w for k, v in w.items()}


def _targets(avail: dict[str, int], cfg: dict) -> tuple[dict[str, int], dict[str, float]]:
    """({source: rows to take}, `target_shares` of the capped counts ({} without weights))."""
    caps = cfg["caps"] or {}
    capped = {k: min(n, caps[k]) if k in caps else n for k, n in avail.items()}
    share = target_shares(capped, cfg["weights"] or {})
    if not share:
        return capped, share
    if cfg.get("total_rows"):
        T = int(cfg["total_rows"])
    else:  # the largest mix that honours the shares without upsampling
        T = min((capped[k] / share[k]) for k in capped if share[k] > 0)
    return {k: min(capped[k], int(round(share[k] * T))) for k in capped}, share


# What the layers below read from a mix row (tokenize: id, source, conversations or text, tools;
# the evaluation: conversations of the test split). Everything else a row carries (the
# regenerated layer's `regeneration`/`status` provenance, custom fields) is kept in the files
# but does not move the mix's data version.
CONSUMED_FIELDS = ("id", "source", "conversations", "text", "tools")


def row_content(row: dict) -> dict:
    """The part of a mix row that downstream consumes (what the data version is made of)."""
    return {k: row[k] for k in CONSUMED_FIELDS if k in row}


class ContentHash:
    """Running hash of rows' consumed content, in order (split boundaries included)."""

    def __init__(self):
        self._h = hashlib.sha256()

    def split(self, name: str) -> None:
        self._h.update(f"\x00split:{name}\x00".encode())

    def add(self, row: dict) -> None:
        self._h.update(json.dumps(row_content(row), sort_keys=True, ensure_ascii=False).encode("utf-8"))
        self._h.update(b"\n")

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def rows_content_sha256(path: Path | str) -> str:
    """Consumed-content hash of one mix file (provenance fields ignored); unreadable lines are
    hashed as they are, so the tokenizer's per-row errors still change the key."""
    h = ContentHash()
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                h.add(loads_object(line))
            except RowDecodeError:
                h._h.update(b"\x01" + line)
    return h.hexdigest()


def build_mix(
    root: Path | str, config: dict | None = None, keys: list[str] | None = None, out_dir: Path | str | None = None
) -> dict:
    """Write `{train,test,quarantine}.jsonl` into `out_dir` (default `<root>/mix`); return the
    realized-mix report, with `content_version`: the hash of what downstream consumes of the
    train and test rows (ids, sources, conversations/text, tools), in order."""
    root = Path(root)
    cfg = mix_config(config)
    available = keys if keys is not None else discover_sources(root)
    wanted = cfg["sources"]
    if wanted in (None, "all"):
        selected = list(available)
    else:
        if isinstance(wanted, dict):
            wanted = list(wanted)
        missing = [k for k in wanted if k not in available]
        if missing:
            raise MixError(f"configs/mix.yaml sources {missing} have no data (materialized: {available})")
        selected = list(wanted)
    for k in list(cfg["weights"]) + list(cfg["caps"]):
        if k not in selected:
            raise ValueError(
                f"configs/mix.yaml names source {k!r} in weights/caps but it is not in the mix ({selected})"
            )

    out_dir = Path(out_dir) if out_dir is not None else root / "mix"
    quarantine: list[dict] = []
    seen_exact: dict[str, tuple[str, str]] = {}
    seen_near: dict[str, tuple[str, str]] = {}
    dup_pairs: Counter = Counter()
    # Kept rows are held as references (byte offset in the source file, new id, chars), not as
    # parsed rows: a mix of millions of conversations would otherwise sit in memory whole.
    # The rows are read again, in output order, when the files are written.
    per_source_rows: dict[str, list[tuple[str, int, str, int]]] = {}
    inputs: dict[str, dict] = {}
    rows_in = Counter()
    near_n = int(cfg["dedup"]["near_dup_prefix_chars"])
    exact = bool(cfg["dedup"]["exact"])
    used_ids: set[str] = set()
    renamed = 0
    stamps: dict[str, tuple[int, int]] = {}
    for key in selected:
        path, origin = source_file(root, key)
        if path is None:
            raise FileNotFoundError(
                f"source {key!r}: neither regenerated/{key}/train.jsonl nor sources/{key}/train.jsonl exists under {root}"
            )
        st = os.stat(path)
        stamps[key] = (st.st_size, st.st_mtime_ns)
        inputs[key] = {"path": str(path), "origin": origin, "sha256": sha256_file(path)}
        kept = []
        offset = 0
        with open(path, "rb") as f:
            for lineno, line in enumerate(f, 1):
                at = offset
                offset += len(line)
                if not line.strip():
                    continue
                rows_in[key] += 1
                try:
                    row = loads_object(line)
                except RowDecodeError as e:
                    quarantine.append(
                        {
                            "source": key,
                            "line": lineno,
                            "id": None,
                            "field": e.field,
                            "reason": f"invalid JSON: {e.reason}",
                        }
                    )
                    continue
                err = validate_row(row)
                if err:
                    quarantine.append(
                        {
                            "source": key,
                            "line": lineno,
                            "id": row.get("id") if isinstance(row, dict) else None,
                            "reason": f"invalid row: {err}",
                        }
                    )
                    continue
                rid = row.get("id")
                rid = str(rid) if rid is not None else f"{key}-{lineno}"
                text = row_text(row)
                if exact:
                    h = content_hash(text)
                    if h in seen_exact:
                        k0, id0 = seen_exact[h]
                        dup_pairs[(k0, key)] += 1
                        quarantine.append(
                            {
                                "source": key,
                                "line": lineno,
                                "id": rid,
                                "reason": f"duplicate: same content as {id0!r} from {k0!r}",
                            }
                        )
                        continue
                if near_n > 0:
                    hp = content_hash(text[:near_n])
                    if hp in seen_near:
                        k0, id0 = seen_near[hp]
                        dup_pairs[(k0, key)] += 1
                        quarantine.append(
                            {
                                "source": key,
                                "line": lineno,
                                "id": rid,
                                "reason": f"near-duplicate: first {near_n} chars equal {id0!r} from {k0!r}",
                            }
                        )
                        continue
                if rid in used_ids:
                    rid = f"{key}-{rid}"
                    n = 2
                    while rid in used_ids:
                        rid = f"{key}-{row.get('id')}-{n}"
                        n += 1
                    renamed += 1
                used_ids.add(rid)
                if exact:
                    seen_exact[h] = (key, rid)
                if near_n > 0:
                    seen_near[hp] = (key, rid)
                kept.append((key, at, rid, row_chars(row)))
        per_source_rows[key] = kept

    rng = random.Random(int(cfg["seed"]))
    avail = {k: len(v) for k, v in per_source_rows.items()}
    targets, target_share = _targets(avail, cfg)
    mixed: list[dict] = []
    for key in selected:
        rows = per_source_rows[key]
        t = targets[key]
        if t < len(rows):
            idx = sorted(rng.sample(range(len(rows)), t))
            keep = set(idx)
            reason = "over cap" if key in (cfg["caps"] or {}) and not cfg["weights"] else "not sampled (weight)"
            for i, r in enumerate(rows):
                if i not in keep:
                    quarantine.append({"source": key, "line": None, "id": r[2], "reason": reason})
            rows = [rows[i] for i in idx]
        mixed.extend(rows)
    rng.shuffle(mixed)
    if not mixed:
        raise MixError(_empty_mix_message(selected, rows_in, quarantine))
    k = _eval_count(len(mixed), cfg["eval"])
    test, train = mixed[:k], mixed[k:]

    out_dir.mkdir(parents=True, exist_ok=True)
    content = ContentHash()
    with contextlib.ExitStack() as stack:
        src = {k: stack.enter_context(open(inputs[k]["path"], "rb")) for k in selected}

        def materialized(refs):
            for key, at, rid, _ in refs:
                f = src[key]
                f.seek(at)
                yield {**loads_object(f.readline()), "id": rid, "source": key}

        for name, rows in (
            ("train.jsonl", materialized(train)),
            ("test.jsonl", materialized(test)),
            ("quarantine.jsonl", quarantine),
        ):
            versioned = name != "quarantine.jsonl"
            if versioned:
                content.split(name)
            with atomic_write(out_dir / name) as f:
                for r in rows:
                    if versioned:
                        content.add(r)
                    f.write(json.dumps(r, ensure_ascii=False))
                    f.write("\n")
                for k in selected:  # rows were re-read by offset: the inputs must not have changed
                    st = os.stat(inputs[k]["path"])
                    if (st.st_size, st.st_mtime_ns) != stamps[k]:
                        raise RuntimeError(
                            f"mix input {inputs[k]['path']} changed while the mix was being "
                            "built (an upstream run wrote it); materialize the mix again"
                        )

    per_source = {}
    for key in selected:
        tr = [r for r in train if r[0] == key]
        te = [r for r in test if r[0] == key]
        q = Counter(x["reason"].split(":")[0] for x in quarantine if x["source"] == key)
        per_source[key] = {
            "rows_in": rows_in[key],
            "rows_after_dedup": avail[key],
            "target_rows": targets[key],
            "train_rows": len(tr),
            "test_rows": len(te),
            "train_chars": sum(r[3] for r in tr),
            "quarantined": dict(q),
            "origin": inputs[key]["origin"],
            "rows_no_assistant_turn": sum(
                1 for x in quarantine if x["source"] == key and NO_ASSISTANT_TURN in x["reason"]
            ),
        }
    total_train = len(train) + len(test)
    shares = {}
    if target_share:
        for k in selected:
            shares[k] = {
                "target": target_share[k],
                "realized": (per_source[k]["train_rows"] + per_source[k]["test_rows"]) / total_train
                if total_train
                else 0.0,
            }
    report = {
        "sources": selected,
        "inputs": inputs,
        "rows_in": sum(rows_in.values()),
        "train_rows": len(train),
        "test_rows": len(test),
        "quarantined_rows": len(quarantine),
        "rows_no_assistant_turn": sum(1 for x in quarantine if NO_ASSISTANT_TURN in x["reason"]),
        "per_source": per_source,
        "duplicates_by_pair": {f"{a} -> {b}": n for (a, b), n in sorted(dup_pairs.items())},
        "duplicates_removed": sum(dup_pairs.values()),
        "ids_renamed": renamed,
        "shares": shares,
        "config": cfg,
        "train_sha256": sha256_file(out_dir / "train.jsonl"),
        "test_sha256": sha256_file(out_dir / "test.jsonl"),
        "content_version": content.hexdigest()[:32],
    }
    assert report["rows_in"] == report["train_rows"] + report["test_rows"] + report["quarantined_rows"], (
        "mix counts do not reconcile"
    )
    return report


def _empty_mix_message(selected: list[str], rows_in: Counter, quarantine: list[dict]) -> str:
    """Why a mix of zero rows is refused, with the counted reasons."""
    if not selected:
        return (
            "the mix has no sources: no source has data (materialize sources/* first, or list them in configs/mix.yaml)"
        )
    total = sum(rows_in.values())
    if total == 0:
        return f"the mix would have 0 rows: sources {selected} hold no rows"
    reasons = Counter(q["reason"].removeprefix("invalid row: ").split(":")[0] for q in quarantine)
    top = ", ".join(f"{n} {r}" for r, n in reasons.most_common(4))
    msg = f"the mix would have 0 rows: all {total} rows of sources {selected} were dropped ({top})"
    if sum(1 for q in quarantine if NO_ASSISTANT_TURN in q["reason"]) == total:
        msg = (
            f"the mix would have 0 rows: all {total} rows of sources {selected} are prompt-only (no assistant turn): "
            "regenerate these sources first (regenerated/<key>/train.jsonl is used when present)"
        )
    return msg
