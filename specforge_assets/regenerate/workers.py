"""Client worker processes: spread the HTTP work of one run over N processes.

One client process tops out at a few thousand requests/s (bench/RESULTS.md). With `workers: N`
the run's main process still reads the input, validates rows, owns the journal and writes the
outputs (so exactly-once is unchanged); N worker processes (`python -m
specforge_assets.regenerate.workers`, each with its own event loop and server pool) do the
requests. Rows and results travel as length-prefixed pickle frames over a socketpair, batched per
event-loop turn. A worker that dies or loses every server stops the run (journal intact; resume).
The API key and any server credentials (user-info of an address, sent as Basic auth) reach
workers through the environment, never the command line: workers get the addresses without them.
"""
from __future__ import annotations

import asyncio
import json
import os
import pickle
import socket
import struct
import subprocess
import sys
from typing import Callable

from ..errors import UserError

_AUTH_ENV = "_SPECFORGE_REGEN_WORKER_AUTH"
_KEY_ENV = "_SPECFORGE_REGEN_WORKER_KEY"
_HDR = struct.Struct("!I")


async def _read_frame(reader: asyncio.StreamReader):
    n = _HDR.unpack(await reader.readexactly(_HDR.size))[0]
    return pickle.loads(await reader.readexactly(n))


def _frame(obj) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HDR.pack(len(data)) + data


class _Outbox:
    """Batches messages of one kind per event-loop turn into a single frame."""

    def __init__(self, writer: asyncio.StreamWriter, kind: str):
        self.writer = writer
        self.kind = kind
        self.items: list = []
        self.scheduled = False

    def add(self, item) -> None:
        self.items.append(item)
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        if self.items and not self.writer.is_closing():
            self.writer.write(_frame((self.kind, self.items)))
            self.items = []


class WorkerFailed(RuntimeError, UserError):
    """A worker process died or lost every server (the journal is intact: resume)."""


class WorkerPool:
    def __init__(self, n: int, addresses: list[str], settings, api_key: str | None,
                 on_result: Callable[[int, dict], None], on_fatal: Callable[[BaseException], None], log,
                 auth: dict[str, str] | None = None):
        """`addresses`: base URLs without credentials; `auth`: base URL -> Authorization value
        (ServerPool.auth), handed to the workers through the environment."""
        self.auth = dict(auth or {})
        self.n = n
        self.addresses = addresses
        self.settings = settings
        self.api_key = api_key
        self.on_result = on_result
        self.on_fatal = on_fatal
        self.log = log
        self.procs: list[subprocess.Popen] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.outboxes: list[_Outbox] = []
        self.inflight: list[int] = []
        self.readers: list[asyncio.Task] = []
        self.stats: list[dict] = []
        self._stopping = False

    async def start(self) -> None:
        import dataclasses

        st = dataclasses.asdict(self.settings)
        st["progress_interval_s"] = 1e9
        # split the per-server concurrency exactly: the workers together never have more requests
        # in flight on a server than `concurrency` (no more workers than request slots)
        conc = self.settings.concurrency
        self.n = min(self.n, conc)
        self.shares = [conc // self.n + (1 if w < conc % self.n else 0) for w in range(self.n)]
        env = dict(os.environ)
        if self.api_key:
            env[_KEY_ENV] = self.api_key
        if self.auth:
            env[_AUTH_ENV] = json.dumps(self.auth)
        ready = []
        for w in range(self.n):
            parent, child = socket.socketpair()
            spec = json.dumps({"addresses": self.addresses, "settings": {**st, "concurrency": self.shares[w]},
                               "fd": child.fileno()})
            proc = subprocess.Popen([sys.executable, "-m", "specforge_assets.regenerate.workers", spec],
                                    pass_fds=(child.fileno(),), env=env, stdin=subprocess.DEVNULL)
            child.close()
            reader, writer = await asyncio.open_unix_connection(sock=parent)
            self.procs.append(proc)
            self.writers.append(writer)
            self.outboxes.append(_Outbox(writer, "rows"))
            self.inflight.append(0)
            fut = asyncio.get_running_loop().create_future()
            ready.append(fut)
            self.readers.append(asyncio.get_running_loop().create_task(self._read(w, reader, fut)))
        await asyncio.gather(*ready)

    async def _read(self, w: int, reader: asyncio.StreamReader, ready: asyncio.Future) -> None:
        try:
            while True:
                kind, payload = await _read_frame(reader)
                if kind == "ready":
                    ready.set_result(True)
                elif kind == "results":
                    self.inflight[w] -= len(payload)
                    for i, out in payload:
                        self.on_result(i, out)
                elif kind == "fatal":
                    err = WorkerFailed(payload)
                    if not ready.done():
                        ready.set_exception(err)
                    self.on_fatal(err)
                    return
                elif kind == "stats":
                    self.stats.append(payload)
                    return
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            if not self._stopping or self.inflight[w]:
                err = WorkerFailed(f"regeneration worker {w} exited unexpectedly "
                                   f"(code {self.procs[w].poll()}): {type(e).__name__}")
                if not ready.done():
                    ready.set_exception(err)
                self.on_fatal(err)

    def submit(self, i: int, row: dict) -> None:
        w = min(range(self.n), key=lambda k: self.inflight[k] / self.shares[k])
        self.inflight[w] += 1
        self.outboxes[w].add((i, row))

    async def close(self) -> dict:
        self._stopping = True
        for ob, wr in zip(self.outboxes, self.writers):
            ob.flush()
            if not wr.is_closing():
                wr.write(_frame(("stop", None)))
        try:
            await asyncio.wait_for(asyncio.gather(*self.readers, return_exceptions=True), 30)
        except asyncio.TimeoutError:
            pass
        for wr in self.writers:
            wr.close()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        servers: dict = {}
        kinds: dict = {}
        retries = 0
        for s in self.stats:
            retries += s["retries"]
            for k, v in s["error_kinds"].items():
                kinds[k] = kinds.get(k, 0) + v
            for addr, d in s["servers"].items():
                agg = servers.setdefault(addr, {"requests": 0, "ok": 0, "failures": 0, "ejections": 0, "up": True,
                                                "model": d.get("model")})
                for k in ("requests", "ok", "failures", "ejections"):
                    agg[k] += d[k]
                agg["up"] = agg["up"] and d["up"]
                agg["model"] = agg["model"] or d.get("model")
        return {"servers": servers, "error_kinds": kinds, "retries": retries}


# -- the worker process --------------------------------------------------------------------------
async def _worker(spec: dict) -> None:
    from .client import NoServerAvailable, ServerPool
    from .rows import regenerate_row
    from .settings import RegenSettings

    sock = socket.socket(fileno=spec["fd"])
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    settings = RegenSettings(**spec["settings"])
    pool = ServerPool(spec["addresses"], settings, api_key=os.environ.get(_KEY_ENV) or None,
                      log=lambda m: print(f"[worker {os.getpid()}] {m}", file=sys.stderr, flush=True),
                      auth=json.loads(os.environ.get(_AUTH_ENV) or "{}"))
    out = _Outbox(writer, "results")
    tasks: set[asyncio.Task] = set()
    fatal = []

    async def one(i: int, row: dict) -> None:
        try:
            res = await regenerate_row(row, settings, pool)
        except NoServerAvailable as e:
            if not fatal:
                fatal.append(str(e))
                writer.write(_frame(("fatal", str(e))))
            return
        except Exception as e:  # noqa: BLE001
            res = {**row, "status": "error", "error": f"internal error: {type(e).__name__}: {e}", "regeneration": None}
        out.add((i, res))

    try:
        try:
            await pool.start(probe_chat=False)
        except NoServerAvailable as e:
            writer.write(_frame(("fatal", str(e))))
            await writer.drain()
            return
        writer.write(_frame(("ready", None)))
        while True:
            try:
                kind, payload = await _read_frame(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return  # the main process is gone
            if kind == "stop":
                break
            for i, row in payload:
                t = asyncio.get_running_loop().create_task(one(i, row))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            await writer.drain()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        out.flush()
        writer.write(_frame(("stats", {"servers": pool.stats(), "error_kinds": pool.error_kinds,
                                       "retries": pool.retries})))
        await writer.drain()
    finally:
        await pool.close()
        writer.close()


def main() -> None:
    spec = json.loads(sys.argv[1])
    try:
        import uvloop
        uvloop.run(_worker(spec))
    except ImportError:  # pragma: no cover
        asyncio.run(_worker(spec))


if __name__ == "__main__":
    main()
