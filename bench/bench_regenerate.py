"""Regeneration client benchmark: our async pool vs a SpecForge-style thread-pool + openai client.

All servers are the project's stub (specforge_assets.regenerate.stubserver) in subprocesses on
127.0.0.1, so the numbers measure the *client*. Run:

    .venv/bin/python bench/bench_regenerate.py            # everything (a few minutes)
    .venv/bin/python bench/bench_regenerate.py --quick    # smaller row counts
    .venv/bin/python bench/bench_regenerate.py --only bound --transports httpx,fast \
        --workers 1,2,4,8 --out bench/results/regenerate_bound_HOST.json   # the server-bound grid

Sections:
1. stub capacity: a minimal raw-socket keep-alive load generator against one stub (what one
   server process can answer on this machine; the ceiling for the client numbers).
2. client overhead: rows/s with 128 requests in flight in total (128 x 1 server or 32 x 4
   servers), single- and three-turn rows, with client CPU seconds per request, for the default
   transport (`auto`: the built-in client for http://) and `transport: httpx` (sharded); plus the
   SpecForge-style baseline in the same run.
3. server-bound: 50 ms stub latency, in flight 64..512 (x transports x worker processes);
   achieved vs ideal (in flight / latency). Each point runs about `--seconds` of ideal work.
4. httpx: one AsyncClient as its pool grows vs the same connections sharded over small
   transports (what the client does): why the pool shards its connections.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import ssl
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from specforge_assets.regenerate.runner import OutputPaths, run_regeneration  # noqa: E402
from specforge_assets.regenerate.settings import RegenSettings  # noqa: E402


def start_stubs(n: int, latency_ms: float = 0.0) -> tuple[list[subprocess.Popen], list[str]]:
    procs, addrs = [], []
    for _ in range(n):
        cmd = [sys.executable, "-m", "specforge_assets.regenerate.stubserver", "--port", "0"]
        if latency_ms:
            cmd += ["--latency-ms", str(latency_ms)]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)
        port = int(p.stdout.readline().split()[1])
        procs.append(p)
        addrs.append(f"127.0.0.1:{port}")
    return procs, addrs


def stop(procs) -> None:
    for p in procs:
        p.kill()
        p.wait()


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def make_input(path: Path, n: int, turns: int) -> Path:
    with open(path, "w") as f:
        for i in range(n):
            conv = []
            for t in range(turns):
                conv += [{"role": "user", "content": f"Question {i}.{t}: what is {i} plus {t}? Explain briefly."},
                         {"role": "assistant", "content": "old answer"}]
            f.write(json.dumps({"id": f"row-{i}", "conversations": conv}) + "\n")
    return path


# -- 1. stub capacity --------------------------------------------------------------------------
async def _raw_load(addr: str, conns: int, seconds: float) -> float:
    host, port = addr.split(":")
    body = json.dumps({"model": "stub-model", "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": 8}).encode()
    req = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n"
           f"content-length: {len(body)}\r\n\r\n").encode() + body
    done = 0
    stop_at = time.monotonic() + seconds

    async def worker():
        nonlocal done
        r, w = await asyncio.open_connection(host, int(port))
        while time.monotonic() < stop_at:
            w.write(req)
            head = await r.readuntil(b"\r\n\r\n")
            n = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
            await r.readexactly(n)
            done += 1
        w.close()

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(conns)))
    return done / (time.monotonic() - t0)


def stub_capacity(seconds: float) -> dict:
    import uvloop

    procs, addrs = start_stubs(1)
    try:
        out = {c: round(uvloop.run(_raw_load(addrs[0], c, seconds))) for c in (8, 32, 128)}
    finally:
        stop(procs)
    return out


# -- 2/3. our client ---------------------------------------------------------------------------
def ours(addrs: list[str], inp: Path, concurrency: int, **kw) -> dict:
    with tempfile.TemporaryDirectory() as d:
        out = OutputPaths.specforge(Path(d) / "out.jsonl")
        st = RegenSettings(model="stub-model", max_tokens=64, concurrency=concurrency, progress_interval_s=3600,
                           **kw)
        c0, t0 = cpu_s(), time.perf_counter()
        stats = run_regeneration(inp, out, st, addrs, log=lambda m: None)
        wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    n = stats["input_rows"]
    assert stats["counts"]["success"] == n, stats["counts"]
    requests = sum(v["requests"] for v in stats["servers"].values())
    return {"rows": n, "requests": requests, "wall_s": round(wall, 2), "rows_per_s": round(n / wall, 1),
            "dispatch_rows_per_s": stats["rows_per_s"],  # excludes input hashing + final ordered write
            "steady_rows_per_s": stats.get("steady_rows_per_s"),  # pipeline full: first result .. last row out
            "requests_per_s": round(requests / wall, 1), "client_cpu_ms_per_request": round(1000 * cpu / requests, 3)}


# -- SpecForge-style baseline ------------------------------------------------------------------
def specforge_style(addrs: list[str], inp: Path, concurrency: int, max_rows: int) -> dict:
    """Built the way SpecForge's regenerate_train_data.py is: ThreadPoolExecutor(concurrency x servers),
    round-robin by line, a new openai.OpenAI client per row, a spinning main loop over futures."""
    import openai

    def call(row, addr):
        client = openai.OpenAI(base_url=f"http://{addr}/v1", api_key="None")
        msgs = []
        for m in row["conversations"]:
            if m["role"] == "user":
                msgs.append(m)
                r = client.chat.completions.create(model="stub-model", messages=msgs, max_tokens=64,
                                                   temperature=0.7, stream=False)
                msgs.append({"role": "assistant", "content": r.choices[0].message.content})
        return {**row, "conversations": msgs, "status": "success"}

    rows = [json.loads(l) for l in open(inp)][:max_rows]
    inflight = {a: [] for a in addrs}
    done = 0
    c0, t0 = cpu_s(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency * len(addrs)) as ex:
        for i, row in enumerate(rows):
            a = addrs[i % len(addrs)]
            while len(inflight[a]) >= concurrency:  # busy-wait, as the reference does
                keep = []
                for f in inflight[a]:
                    if f.done():
                        f.result()
                        done += 1
                    else:
                        keep.append(f)
                inflight[a] = keep
            inflight[a].append(ex.submit(call, row, a))
        for a in addrs:
            for f in inflight[a]:
                f.result()
                done += 1
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    turns = sum(sum(1 for m in r["conversations"] if m["role"] == "user") for r in rows)
    return {"rows": done, "wall_s": round(wall, 2), "rows_per_s": round(done / wall, 1),
            "client_cpu_ms_per_request": round(1000 * cpu / turns, 3)}


# -- 4. connections per AsyncClient ------------------------------------------------------------
async def _httpx_one_client(addr: str, conns: int, n: int) -> float:
    import httpx

    body = json.dumps({"model": "stub-model", "messages": [{"role": "user", "content": "hi"}]})
    async with httpx.AsyncClient(base_url=f"http://{addr}", limits=httpx.Limits(max_connections=conns),
                                 trust_env=False) as c:
        sem = asyncio.Semaphore(conns)

        async def one():
            async with sem:
                r = await c.post("/v1/chat/completions", content=body)
                r.raise_for_status()

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        return n / (time.perf_counter() - t0)


async def _httpx_shards(addr: str, conns: int, per_shard: int, n: int) -> tuple[float, float]:
    from specforge_assets.regenerate.client import HttpxShard

    body = json.dumps({"model": "stub-model", "messages": [{"role": "user", "content": "hi"}]}).encode()
    shards = [HttpxShard(f"http://{addr}", {"content-type": "application/json"}, per_shard, 5.0, 60.0, verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
              for _ in range(max(1, conns // per_shard))]
    rr = 0

    async def worker(k):
        nonlocal rr
        for _ in range(k):
            rr = (rr + 1) % len(shards)
            r = await shards[rr].post("/v1/chat/completions", content=body)
            assert r.status_code == 200

    c0, t0 = cpu_s(), time.perf_counter()
    await asyncio.gather(*(worker(n // conns) for _ in range(conns)))
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    for s in shards:
        await s.aclose()
    done = (n // conns) * conns
    return done / wall, 1000 * cpu / done


def httpx_scaling(n: int) -> dict:
    import uvloop

    procs, addrs = start_stubs(1)
    try:
        out = {f"one_asyncclient_{c}_connections": round(uvloop.run(_httpx_one_client(addrs[0], c, n)))
               for c in (8, 32, 128)}
        for per in (2, 4, 16):
            rate, cpu = uvloop.run(_httpx_shards(addrs[0], 128, per, n))
            out[f"shards_of_{per}_128_connections"] = round(rate)
            out[f"shards_of_{per}_128_connections_client_cpu_ms"] = round(cpu, 3)
        return out
    finally:
        stop(procs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="capacity,httpx,client,bound,loop")
    ap.add_argument("--transports", default="auto,httpx", help="server-bound grid: transports")
    ap.add_argument("--workers", default="1", help="server-bound grid: client worker processes, e.g. 1,2,4")
    ap.add_argument("--inflight", default="64,128,256,512", help="server-bound grid: requests in flight")
    ap.add_argument("--seconds", type=float, default=6.0, help="server-bound: ideal seconds of work per point")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "regenerate.json"))
    args = ap.parse_args()
    only = set(args.only.split(","))
    n1 = 3000 if args.quick else 8000
    res: dict = {"cpu_count": os.cpu_count(), "loadavg_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        single = make_input(d / "single.jsonl", n1, 1)
        three = make_input(d / "three.jsonl", n1 // 3, 3)
        if "capacity" in only:
            res["stub_capacity_req_per_s_by_connections"] = stub_capacity(3.0)
            print("stub capacity", res["stub_capacity_req_per_s_by_connections"], flush=True)
        if "httpx" in only:
            res["httpx_req_per_s"] = httpx_scaling(4000)
            print("httpx", res["httpx_req_per_s"], flush=True)
        if "client" in only:
            client = {}
            for n_servers in (1, 4):
                procs, addrs = start_stubs(n_servers)
                try:
                    conc = 128 // n_servers  # 128 in flight in total
                    for name, inp in (("single_turn", single), ("three_turn", three)):
                        r = ours(addrs, inp, conc)
                        client[f"ours_{n_servers}srv_{name}"] = r
                        print(f"ours {n_servers} servers {name}", r, flush=True)
                    for name, inp in (("single_turn", single), ("three_turn", three)):
                        r = ours(addrs, inp, conc, transport="httpx")
                        client[f"ours_httpx_{n_servers}srv_{name}"] = r
                        print(f"ours (transport: httpx) {n_servers} servers {name}", r, flush=True)
                    r = specforge_style(addrs, single, conc, 300 if args.quick else 600)
                    client[f"specforge_style_{n_servers}srv_single_turn"] = r
                    print(f"specforge-style {n_servers} servers", r, flush=True)
                finally:
                    stop(procs)
            for n_servers in (1, 4):
                a = client[f"ours_{n_servers}srv_single_turn"]["rows_per_s"]
                b = client[f"specforge_style_{n_servers}srv_single_turn"]["rows_per_s"]
                client[f"speedup_{n_servers}srv"] = round(a / b, 1)
                client[f"speedup_httpx_{n_servers}srv"] = round(
                    client[f"ours_httpx_{n_servers}srv_single_turn"]["rows_per_s"] / b, 1)
            res["client_overhead_128_in_flight"] = client
        if "bound" in only:
            bound = {}
            procs, addrs = start_stubs(4, latency_ms=50)
            try:
                for transport in args.transports.split(","):
                    for workers in [int(w) for w in args.workers.split(",")]:
                        for inflight in [int(x) for x in args.inflight.split(",")]:
                            ideal = inflight / 0.050
                            n = int(max(2000, args.seconds * ideal))
                            inp = d / f"b{n}.jsonl"
                            if not inp.exists():
                                make_input(inp, n, 1)
                            r = ours(addrs, inp, inflight // 4, transport=transport, workers=workers)
                            r.update(transport=transport, workers=workers, in_flight=inflight, ideal_rows_per_s=ideal,
                                     achieved_fraction=round(r["rows_per_s"] / ideal, 3),
                                     achieved_fraction_dispatch=round(r["dispatch_rows_per_s"] / ideal, 3),
                                     achieved_fraction_steady=round((r["steady_rows_per_s"] or 0) / ideal, 3))
                            bound[f"{transport}_workers{workers}_in_flight_{inflight}"] = r
                            print("server-bound", transport, "workers", workers, "in flight", inflight,
                                  "fraction", r["achieved_fraction"], "dispatch", r["achieved_fraction_dispatch"],
                                  "steady", r["achieved_fraction_steady"],
                                  "cpu ms/req", r["client_cpu_ms_per_request"], flush=True)
            finally:
                stop(procs)
            res["server_bound_50ms_4_servers"] = bound
        if "loop" in only:
            lp = {}
            procs, addrs = start_stubs(4)
            try:
                for name in ("uvloop", "asyncio"):
                    saved = sys.modules.get("uvloop")
                    if name == "asyncio":
                        sys.modules["uvloop"] = None  # the runner falls back to asyncio.run
                    try:
                        lp[name] = ours(addrs, single, 32)
                    finally:
                        if name == "asyncio":
                            if saved is None:
                                del sys.modules["uvloop"]
                            else:
                                sys.modules["uvloop"] = saved
                    print("event loop", name, lp[name], flush=True)
            finally:
                stop(procs)
            res["event_loop_4srv_single_turn_128_in_flight"] = lp
    res["loadavg_at_end"] = os.getloadavg()
    print(json.dumps(res, indent=1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
