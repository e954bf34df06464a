"""One regeneration run: input JSONL -> success / error / skipped JSONL, exactly once.

The same function backs the `regenerated/conversations` asset and `specforge-assets regenerate`.
Rows stream from the input; at most concurrency x servers rows are in flight; each finished row
goes to the journal; when every input row has a journal record the three outputs are written
atomically in input order and the journal is removed — unless some rows ended as errors: then
the journal is kept and the next run (CLI --resume, or the asset's next materialization) redoes
only those rows. Input lines are read under `jsonrows.loads_row` (the one JSON row rule): a line
that is not valid UTF-8 / JSON, nests too deep or holds a lone surrogate is a skipped row naming
the line and field, never a crash.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import UserError
from ..fileio import atomic_write, sha256_file
from ..jsonrows import RowDecodeError, loads_row, salvage_id
from .client import NoServerAvailable, ServerPool
from .journal import Journal, JournalWriteError
from .locks import exclusive, output_lock_path
from .rows import passthrough_row, regenerate_row, skipped_row, validate_conversation
from .settings import RegenSettings
from .text import scrub


class OutputWriteError(RuntimeError, UserError):
    """The outputs cannot be written (the journal is intact: fix the cause and resume)."""


class InputNotFound(FileNotFoundError, UserError):
    """The regeneration input file does not exist."""


class OutputOverwritesInput(ValueError, UserError):
    """An output path is the input file."""


@dataclass
class OutputPaths:
    success: Path
    error: Path
    skipped: Path

    @classmethod
    def specforge(cls, output_path: Path | str) -> "OutputPaths":
        """SpecForge's names: OUT, and OUT with `_error` / `_skipped` before `.jsonl`."""
        out = Path(output_path)
        name = out.name
        if name.endswith(".jsonl"):
            base = name[: -len(".jsonl")]
            return cls(out, out.with_name(base + "_error.jsonl"), out.with_name(base + "_skipped.jsonl"))
        return cls(out, out.with_name(name + "_error"), out.with_name(name + "_skipped"))

    @classmethod
    def partition(cls, directory: Path | str, name: str = "train") -> "OutputPaths":
        d = Path(directory)
        if name == "train":
            return cls(d / "train.jsonl", d / "errors.jsonl", d / "skipped.jsonl")
        return cls(d / f"{name}.jsonl", d / f"{name}_errors.jsonl", d / f"{name}_skipped.jsonl")


def _parse(line: bytes, lineno: int):
    """(row, None) or (None, skip reason) for one input line (bytes, newline included).

    Uses `jsonrows.loads_row`: invalid UTF-8, malformed JSON, nesting deeper than
    `jsonrows.MAX_DEPTH` and lone surrogates give ``Invalid JSON: line N (field F): reason``.
    The value may be any JSON type (`rows.validate_conversation` refuses non-objects)."""
    try:
        return loads_row(line), None
    except RowDecodeError as e:
        where = f" (field {e.field})" if e.field else ""
        return None, f"Invalid JSON: line {lineno}{where}: {e.reason}"


def _bad_line_row(line: bytes, reason: str) -> tuple[object, dict]:
    """(id or None, skipped row) for a line that could not be read: the raw text under `data`,
    and the row's `id` when it can be read (`jsonrows.salvage_id`: accounting by id still works)."""
    row_id = salvage_id(line)
    text = line.decode("utf-8", "replace").rstrip("\r\n")
    out = {"status": "skipped", "error": reason, "data": text}
    if isinstance(row_id, (str, int)):
        out = {"id": row_id, **out}
    return row_id, out


def _plan(input_path: Path, done, st: RegenSettings):
    """What happens to each input row not in `done`: yields (index, line, row, action, reason) with
    action "request" (sent to a server), "bad_json" / "skip" (skipped.jsonl) or "passthrough"
    (unchanged in the output, beyond num_samples). Indices count non-blank lines; rows already
    in `done` are not yielded but still count toward num_samples."""
    valid_seen = 0
    with open(input_path, "rb") as f:
        i = -1
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            i += 1
            row, bad_json = _parse(line, lineno)
            reason = bad_json or validate_conversation(row)
            if reason is None:
                valid_seen += 1
            if i in done:
                continue
            if bad_json:
                yield i, line, None, "bad_json", bad_json
            elif reason is not None:
                yield i, line, row, "skip", reason
            elif st.num_samples is not None and valid_seen > st.num_samples:
                why = f"beyond the num_samples limit ({st.num_samples})"
                answered = any(isinstance(m, dict) and m.get("role") == "assistant" for m in row["conversations"])
                if st.beyond_limit == "passthrough" and not answered:
                    yield (
                        i,
                        line,
                        row,
                        "skip",
                        (f"Not submitted: {why}; a prompt-only row has no answers to pass through"),
                    )
                elif st.beyond_limit == "passthrough":
                    yield i, line, row, "passthrough", why
                else:
                    yield i, line, row, "skip", f"Not submitted: {why}"
            else:
                yield i, line, row, "request", None


def count_requests(input_path: Path, done, st: RegenSettings) -> int:
    """How many rows of `input_path` this run sends to a server (resumed and skipped rows excluded)."""
    return sum(1 for p in _plan(input_path, done, st) if p[3] == "request")


def count_rows(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                n += 1
    return n


def _fmt_eta(s: float) -> str:
    if s != s or s == float("inf"):
        return "?"
    s = int(s)
    return f"{s // 3600}h{(s % 3600) // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class _Progress:
    """Progress of the rows that need a request: resumed rows and rows that end without one
    (skipped, passed through) are reported but never counted in the rate or the ETA."""

    def __init__(self, total: int, already: int, requests: int):
        self.total = total
        self.already = already
        self.requests = requests
        self.done_now = 0  # every row finished in this run
        self.requested_done = 0  # rows finished in this run that went to a server
        self.tokens = 0
        self.status: dict[str, int] = {}
        self.t0 = time.monotonic()
        # steady state: from the first finished row to the last row handed out, the stretch in
        # which the pipeline was kept full (no start-up probe, no draining tail)
        self.first: tuple[float, int] | None = None
        self.last: tuple[float, int] | None = None

    def steady_rate(self) -> float | None:
        if self.first is None or self.last is None or self.last[0] <= self.first[0] or self.last[1] <= self.first[1]:
            return None
        return (self.last[1] - self.first[1]) / (self.last[0] - self.first[0])

    def add(self, status: str, row: dict, requested: bool = False) -> None:
        self.done_now += 1
        if requested:
            if self.first is None:
                self.first = (time.monotonic(), self.requested_done)
            self.requested_done += 1
        self.status[status] = self.status.get(status, 0) + 1
        prov = row.get("regeneration") if isinstance(row, dict) else None
        if isinstance(prov, dict) and "usage" in prov:
            self.tokens += int(prov["usage"].get("completion_tokens") or 0)

    def line(self) -> str:
        el = max(1e-9, time.monotonic() - self.t0)
        done = self.requested_done
        rate = done / el
        left = max(0, self.requests - done)
        eta = 0.0 if left == 0 else (left / rate if rate > 0 else float("inf"))
        other = self.done_now - self.requested_done
        return (
            f"regenerate: {done}/{self.requests} rows needing a request "
            f"({100.0 * done / max(1, self.requests):.1f}%), {rate:.2f} rows/s, {self.tokens / el:.0f} tokens/s, "
            f"ETA {_fmt_eta(eta)}; errors {self.status.get('error', 0)}; "
            f"{other} rows without a request (skipped/passthrough), {self.already} resumed, "
            f"{self.already + self.done_now}/{self.total} rows in all"
        )


def run_regeneration(
    input_path: Path | str,
    outputs: OutputPaths,
    settings: RegenSettings,
    addresses: list[str],
    *,
    api_key: str | None = None,
    resume: bool = True,
    restart: bool = False,
    log: Callable[[str], None] = print,
    run_id: str | None = None,
) -> dict:
    """Regenerate `input_path` into `outputs`. Returns stats (counts, throughput, servers, errors).

    Refused with `locks.RegenerationBusy` while another run writes the same outputs (after
    waiting `settings.lock_wait_s`)."""
    try:
        import uvloop  # noqa: F401

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        runner = asyncio.run
    # one run per output at a time (the asset also holds its partition's lock around this)
    with exclusive(
        output_lock_path(outputs.success),
        f"regeneration output {outputs.success}",
        settings.lock_wait_s,
        run_id=run_id,
        log=log,
    ):
        return runner(_run(Path(input_path), outputs, settings, addresses, api_key, resume, restart, log))


async def _run(
    input_path: Path,
    outputs: OutputPaths,
    st: RegenSettings,
    addresses: list[str],
    api_key: str | None,
    resume: bool,
    restart: bool,
    log,
) -> dict:
    if not input_path.is_file():
        what = "is a folder, not a file" if input_path.is_dir() else "not found"
        raise InputNotFound(
            f"regeneration input {what}: {input_path} (resolved: {input_path.absolute()}; "
            "command-line paths are relative to the current directory)"
        )
    for p in (outputs.success, outputs.error, outputs.skipped):
        if p.resolve() == input_path.resolve():
            raise OutputOverwritesInput(f"output {p} would overwrite the input; choose another --output-file-path")
        p.parent.mkdir(parents=True, exist_ok=True)
    fingerprint = {"settings": st.content_config(), "input_sha256": sha256_file(input_path)}
    journal = Journal(outputs.success, batch=st.journal_batch, flush_s=st.journal_flush_s)
    state = journal.read_state()
    same_complete = (
        resume
        and not restart
        and state
        and state.get("state") == "complete"
        and state.get("fingerprint") == fingerprint
        and outputs.success.exists()
    )
    prev_errors = int(((state or {}).get("stats") or {}).get("counts", {}).get("error", 0) or 0)
    if same_complete and not (prev_errors and journal.path.exists()):
        log(f"regenerate: {outputs.success} is already complete for these settings and input; nothing to do")
        return state.get("stats") or {}
    done = journal.prepare(fingerprint, resume=resume, restart=restart, input_path=input_path, log=log)
    total = count_rows(input_path)
    if same_complete:
        log(f"regenerate: retrying the {total - len(done)} error rows of the last run ({len(done)}/{total} rows kept)")
    elif done:
        log(f"regenerate: resuming, {len(done)}/{total} rows already done")
    requests = count_requests(input_path, done, st)
    prog = _Progress(total, len(done), requests)
    tally = Tally()
    t0 = time.monotonic()
    pool = None
    pending: set[asyncio.Task] = set()
    fatal: list[BaseException] = []
    try:
        need_server = requests > 0
        if need_server:
            pool = ServerPool(addresses, st, api_key=api_key, log=log)
            await pool.start()
            log(f"regenerate: {requests} rows need a request ({total} input rows, {len(done)} already done)")
        sem = asyncio.Semaphore(st.concurrency * (len(pool.servers) if pool else 1))

        def finish(i: int, row_id, status: str, row: dict, requested: bool = False) -> None:
            try:
                journal.append(i, row_id, status, row)
            except JournalWriteError as e:
                if not fatal:
                    fatal.append(e)
                return
            prog.add(status, row, requested)
            tally.add(status, row)

        async def one(i: int, row: dict) -> None:
            try:
                out = await regenerate_row(row, st, pool)
                finish(i, row.get("id"), out["status"], out, requested=True)
            except NoServerAvailable as e:
                if not fatal:
                    fatal.append(e)
            except Exception as e:  # noqa: BLE001 - a bug in one row must not lose the others
                finish(
                    i,
                    row.get("id"),
                    "error",
                    {
                        **row,
                        "status": "error",
                        "error": f"internal error: {type(e).__name__}: {e}",
                        "regeneration": None,
                    },
                    requested=True,
                )
            finally:
                sem.release()

        async def progress() -> None:
            while True:
                await asyncio.sleep(st.progress_interval_s)
                log(prog.line())

        async def commit() -> None:
            # rows that finished before a stall (every server slow or held) are committed within
            # the journal's flush_s, not only when the next row finishes
            while not fatal:
                await asyncio.sleep(journal.flush_s)
                try:
                    journal.flush()
                except JournalWriteError as e:
                    if not fatal:
                        fatal.append(e)

        ticker = asyncio.get_running_loop().create_task(progress())
        committer = asyncio.get_running_loop().create_task(commit())
        try:
            for i, line, row, action, why in _plan(input_path, done, st):
                if fatal:
                    break
                if action == "bad_json":
                    bad_id, bad_row = _bad_line_row(line, why)
                    finish(i, bad_id, "skipped", bad_row)
                    continue
                if action == "skip":
                    finish(i, row.get("id") if isinstance(row, dict) else None, "skipped", skipped_row(row, why))
                    continue
                if action == "passthrough":
                    finish(i, row.get("id"), "passthrough", passthrough_row(row, why))
                    continue
                await sem.acquire()
                if fatal:
                    sem.release()
                    break
                t = asyncio.get_running_loop().create_task(one(i, row))
                pending.add(t)
                t.add_done_callback(pending.discard)
            prog.last = (time.monotonic(), prog.requested_done)
            while pending and not fatal:
                await asyncio.wait(set(pending), timeout=0.5)
        finally:
            ticker.cancel()
            committer.cancel()
            if fatal:
                for t in list(pending):
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        if fatal:
            raise fatal[0]
        journal.close()
        log(prog.line())
    except BaseException:
        try:
            journal.close()
        except JournalWriteError:
            pass
        raise
    finally:
        if pool is not None:
            server_stats, retries, error_kinds = pool.stats(), pool.retries, dict(pool.error_kinds)
            await pool.close()
        else:
            server_stats, retries, error_kinds = {}, 0, {}

    elapsed = time.monotonic() - t0
    steady = prog.steady_rate()
    stats = finalize(journal, total, outputs, tally, done)
    stats.update(
        {
            "elapsed_s": round(elapsed, 3),
            "rows_this_run": prog.done_now,
            "requested_rows_this_run": prog.requested_done,
            # the rate of the rows that went to a server, as in the progress lines: skipped,
            # passed-through and resumed rows cost no request and would inflate it
            "rows_per_s": round(prog.requested_done / elapsed, 2) if elapsed > 0 else None,
            "steady_rows_per_s": round(steady, 2) if steady else None,
            "completion_tokens_per_s": round(prog.tokens / elapsed, 1) if elapsed > 0 else None,
            "resumed_rows": len(done),
            "servers": server_stats,
            "retries": retries,
            "request_error_kinds": error_kinds,
            "client": {"concurrency_per_server": st.concurrency},
        }
    )
    stats = scrub(stats)  # server model names, finish reasons, error kinds: text a server chose
    journal.write_state(fingerprint=fingerprint, state="complete", stats=stats)
    if stats["counts"].get("error", 0):
        journal.close()  # kept: the next run redoes the error rows only
        log(
            f"regenerate: {stats['counts']['error']} error rows in {outputs.error}; run again "
            "(CLI: --resume) to retry only those"
        )
    else:
        journal.discard()
    log(f"regenerate: done — {stats['counts']} in {elapsed:.1f}s")
    return stats


class Tally:
    """Counts and provenance totals over finished rows (the final metadata)."""

    def __init__(self) -> None:
        self.counts = {"success": 0, "error": 0, "skipped": 0, "passthrough": 0}
        self.errors: dict[str, int] = {}
        self.finish: dict[str, int] = {}
        self.tokens = {"prompt_tokens": 0, "completion_tokens": 0}
        self.models: dict[str, int] = {}

    def add(self, status: str, row: dict) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1
        prov = row.get("regeneration") if isinstance(row, dict) else None
        if status == "error":
            kind = (prov or {}).get("error_kind") or "other"
            self.errors[kind] = self.errors.get(kind, 0) + 1
        elif status == "skipped":
            key = "skipped: " + str(row.get("error", "")).split(":")[0][:80]
            self.errors[key] = self.errors.get(key, 0) + 1
        if isinstance(prov, dict) and "turns" in prov:
            for t in prov["turns"]:
                fr = str(t.get("finish_reason"))
                self.finish[fr] = self.finish.get(fr, 0) + 1
            for k in self.tokens:
                self.tokens[k] += int(prov["usage"].get(k) or 0)
            if prov.get("model"):
                self.models[prov["model"]] = self.models.get(prov["model"], 0) + 1


def finalize(journal: Journal, total: int, outputs: OutputPaths, tally: Tally, resumed) -> dict:
    """Write the three outputs in input order from the journal (atomically). Returns counts etc.

    Rows are copied as the JSON text the journal holds (not parsed and re-serialized); `tally`
    already covers the rows finished in this run, rows from an earlier run (`resumed`) are added.
    """
    done = journal.load()
    missing = [i for i in range(total) if i not in done]
    if missing:
        raise RuntimeError(f"journal {journal.path} lacks {len(missing)} rows (first: {missing[:5]}); resume the run")
    try:
        with (
            atomic_write(outputs.success) as fs,
            atomic_write(outputs.error) as fe,
            atomic_write(outputs.skipped) as fk,
        ):
            for i, status, raw in journal.iter_records(done, range(total)):
                if i in resumed:
                    tally.add(status, json.loads(raw))
                target = fs if status in ("success", "passthrough") else fe if status == "error" else fk
                target.write(raw)
                target.write("\n")
    except OSError as e:
        raise OutputWriteError(
            f"cannot write regeneration output next to {outputs.success}: {e} "
            f"(the journal {journal.path} is intact; fix the problem and resume)"
        ) from e
    return {
        "counts": dict(tally.counts),
        "input_rows": total,
        "breakdown": tally.errors,
        "finish_reasons": tally.finish,
        "usage": tally.tokens,
        "server_models": tally.models,
        "outputs": {"success": str(outputs.success), "error": str(outputs.error), "skipped": str(outputs.skipped)},
    }
