"""Regeneration client benchmark: what a real run needs, and the client's CPU.

All servers are the project's stub (specforge_assets.regenerate.stubserver) in subprocesses on
127.0.0.1. Each client point runs `run_regeneration` (the CLI/asset code path) in a child process,
so the client's CPU is measured alone and the same child can run another source tree (`--before`:
the code before this change, e.g. `main`), in the same run against the same servers. Run:

    .venv/bin/python bench/bench_regenerate.py --before main           # headline + secondary
    .venv/bin/python bench/bench_regenerate.py --only realistic --rows 60000 --before bench/_before

Sections:
1. realistic (the headline): 4 servers with log-normal latency (median 2 s, sigma 0.8, capped at
   30 s, seeded), 2,048 requests in flight in total (512 per server). Ideal rate = in flight /
   the mean latency the servers actually slept; achieved = the run's steady rate (first answer to
   the last row handed out) and its wall rate; client CPU ms per request.
2. capacity (secondary): a raw-socket keep-alive load generator against one zero-latency stub
   (what one server process can answer here).
3. client (secondary): zero-latency stubs, 128 in flight (32 x 4 servers), single-turn: the
   client's ceiling in rows/s and its CPU per request; plus the SpecForge-style thread-pool
   client in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _trees import source_tree  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def start_stubs(
    n: int, latency_ms: float = 0.0, extra: list[str] = (), seeds: bool = False
) -> tuple[list[subprocess.Popen], list[str]]:
    procs, addrs = [], []
    for k in range(n):
        cmd = [sys.executable, "-m", "specforge_assets.regenerate.stubserver", "--port", "0", *extra]
        if latency_ms:
            cmd += ["--latency-ms", str(latency_ms)]
        if seeds:
            cmd += ["--seed", str(k)]
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
                conv += [
                    {"role": "user", "content": f"Question {i}.{t}: what is {i} plus {t}? Explain briefly."},
                    {"role": "assistant", "content": "old answer"},
                ]
            f.write(json.dumps({"id": f"row-{i}", "conversations": conv}) + "\n")
    return path


# -- 1. stub capacity --------------------------------------------------------------------------
async def _raw_load(addr: str, conns: int, seconds: float) -> float:
    host, port = addr.split(":")
    body = json.dumps(
        {"model": "stub-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    ).encode()
    req = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body
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


# -- our client, in a child process ---------------------------------------------------------------
CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))  # 2,048 sockets in one process
from specforge_assets.regenerate.runner import OutputPaths, run_regeneration
from specforge_assets.regenerate.settings import RegenSettings
spec = json.loads(sys.argv[2])
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
st = RegenSettings(model="stub-model", max_tokens=64, progress_interval_s=3600, **spec["settings"])
c0, t0 = cpu(), time.perf_counter()
stats = run_regeneration(spec["input"], OutputPaths.specforge(spec["out"]), st, spec["addresses"],
                         log=lambda m: None)
print(json.dumps({"wall_s": time.perf_counter() - t0, "cpu_s": cpu() - c0, "stats": stats}, default=str))
"""


def ours(src: Path, addrs: list[str], inp: Path, concurrency: int, **kw) -> dict:
    """One `run_regeneration` of `inp` by the code under `src`, in a child process."""
    with tempfile.TemporaryDirectory() as d:
        spec = {
            "input": str(inp),
            "out": str(Path(d) / "out.jsonl"),
            "addresses": addrs,
            "settings": {"concurrency": concurrency, **kw},
        }
        r = subprocess.run(
            [sys.executable, "-c", CHILD, str(src), json.dumps(spec)], capture_output=True, text=True, cwd=d
        )
    if r.returncode != 0:
        raise RuntimeError(f"client run failed ({src}): {r.stderr[-2000:]}")
    got = json.loads(r.stdout.strip().splitlines()[-1])
    stats, wall, cpu = got["stats"], got["wall_s"], got["cpu_s"]
    n = stats["input_rows"]
    assert stats["counts"]["success"] == n, stats["counts"]
    requests = sum(v["requests"] for v in stats["servers"].values())
    return {
        "rows": n,
        "requests": requests,
        "wall_s": round(wall, 2),
        "rows_per_s": round(n / wall, 1),
        "dispatch_rows_per_s": stats["rows_per_s"],  # excludes input hashing + final ordered write
        "steady_rows_per_s": stats.get("steady_rows_per_s"),  # pipeline full: first result .. last row out
        "retries": stats.get("retries"),
        "request_error_kinds": stats.get("request_error_kinds"),
        "client_cpu_ms_per_request": round(1000 * cpu / requests, 3),
    }


def server_stats(addrs: list[str]) -> list[dict]:
    import httpx

    return [httpx.get(f"http://{a}/stats", timeout=30, trust_env=False).json() for a in addrs]


# -- 1. realistic latency -------------------------------------------------------------------------
def realistic(trees: dict[str, Path], d: Path, rows: int, in_flight: int, sigma: float) -> dict:
    inp = make_input(d / f"realistic{rows}.jsonl", rows, 1)
    res = {
        "servers": 4,
        "in_flight": in_flight,
        "latency": {"median_s": 2.0, "sigma": sigma, "cap_s": 30.0},
        "rows": rows,
    }
    for name, src in trees.items():
        procs, addrs = start_stubs(
            4, latency_ms=2000, extra=["--latency-sigma", str(sigma), "--latency-cap-ms", "30000"], seeds=True
        )
        try:
            r = ours(src, addrs, inp, in_flight // 4)
            seen = server_stats(addrs)
        finally:
            stop(procs)
        mean_latency = sum(s["slept_s"] for s in seen) / sum(s["chat_requests"] for s in seen)
        ideal = in_flight / mean_latency
        r.update(
            mean_server_latency_s=round(mean_latency, 3),
            ideal_rows_per_s=round(ideal, 1),
            max_in_flight_per_server=[s["max_inflight"] for s in seen],
            achieved_fraction_steady=round((r["steady_rows_per_s"] or 0) / ideal, 3),
            achieved_fraction_dispatch=round(r["dispatch_rows_per_s"] / ideal, 3),
            achieved_fraction_wall=round(r["rows_per_s"] / ideal, 3),
        )
        res[name] = r
        print("realistic", name, json.dumps(r), flush=True)
    return res


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
                r = client.chat.completions.create(
                    model="stub-model", messages=msgs, max_tokens=64, temperature=0.7, stream=False
                )
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
    return {
        "rows": done,
        "wall_s": round(wall, 2),
        "rows_per_s": round(done / wall, 1),
        "client_cpu_ms_per_request": round(1000 * cpu / turns, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer rows everywhere")
    ap.add_argument("--only", default="realistic,capacity,client")
    ap.add_argument(
        "--before",
        default="",
        help="also measure this source tree (a directory or a git ref, e.g. main) in the same run, as 'before'",
    )
    ap.add_argument("--also", default="", help="more trees to measure in the same run: NAME=DIR_OR_REF[,...]")
    ap.add_argument("--rows", type=int, default=0, help="realistic: rows (default 60,000; --quick 12,000)")
    ap.add_argument("--in-flight", type=int, default=2048)
    ap.add_argument("--sigma", type=float, default=0.8, help="realistic: sigma of log(latency)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "regenerate.json"))
    args = ap.parse_args()
    only = set(args.only.split(","))
    res: dict = {"cpu_count": os.cpu_count(), "python": sys.version.split()[0], "loadavg_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        trees = {"after": REPO}
        for spec in [x for x in args.also.split(",") if x][::-1]:
            name, _, ref = spec.partition("=")
            trees = {name: source_tree(ref, d), **trees}
        if args.before:
            trees = {"before": source_tree(args.before, d), **trees}
        res["trees"] = {k: str(v) for k, v in trees.items()}
        if "realistic" in only:
            rows = args.rows or (12000 if args.quick else 60000)
            res["realistic_4_servers_lognormal_2s"] = realistic(trees, d, rows, args.in_flight, args.sigma)
        if "capacity" in only:
            res["stub_capacity_req_per_s_by_connections"] = stub_capacity(3.0)
            print("stub capacity", res["stub_capacity_req_per_s_by_connections"], flush=True)
        if "client" in only:
            single = make_input(d / "single.jsonl", 3000 if args.quick else 8000, 1)
            client = {}
            procs, addrs = start_stubs(4)
            try:
                for name, src in trees.items():
                    client[name] = ours(src, addrs, single, 32)
                    print("zero latency, 4 servers x 32 in flight", name, client[name], flush=True)
                try:
                    client["specforge_style"] = specforge_style(addrs, single, 32, 300 if args.quick else 600)
                    print("specforge-style", client["specforge_style"], flush=True)
                except ImportError as e:  # the baseline needs the openai package
                    print(f"specforge-style baseline skipped: {e}", flush=True)
            finally:
                stop(procs)
            for name in trees:
                if "specforge_style" in client:
                    client[f"speedup_{name}_vs_specforge_style"] = round(
                        client[name]["rows_per_s"] / client["specforge_style"]["rows_per_s"], 1
                    )
            res["zero_latency_4_servers_128_in_flight"] = client
    res["loadavg_at_end"] = os.getloadavg()
    print(json.dumps(res, indent=1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
