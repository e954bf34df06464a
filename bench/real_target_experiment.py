"""Does regenerating the answers with the target raise acceptance? One command, the real graph.

Two EAGLE3 drafts for SmolLM2-135M-Instruct with identical settings (TTT 7, same steps, seed and
vocab-mapping size), differing only in data: the datasets' **original** answers, and answers
**regenerated** by SmolLM2 itself through the `regenerated/conversations` layer. Everything runs
through this project's assets in one data root and one Dagster instance, the way a user runs
them (the same code paths as `specforge-assets demo`, with the configs this script writes):

  1. original   config A (regeneration off): sources (4 partitions) → regenerated (passthrough)
                → mix → tokenized → vocab mapping → models/target_model; then models/draft_model
                (draft 1, on GPU 0) runs in its own process while ...
  2. regenerate config B (regeneration on): regenerated/conversations of every partition against
                `--servers-per-gpu` batching servers per GPU (bench/batch_server.py), temperature
                0.7 (SpecForge's default), max_tokens `--max-tokens`
  3. retrain    config B: mix → tokenized → vocab mapping → models/draft_model (draft 2)
  4. evaluate   models/draft_evaluation: draft 2 beside the previous version (draft 1) and an
                untrained draft, on every evaluation set at k = 4 and 7, lossless-checked,
                `--eval-workers` processes over the GPUs.

Training prompts: GSM8K train + CodeAlpaca 2k + GPTeacher codegen + roleplay, minus a held-out
slice of `--heldout-per-source` rows of each (written as the `heldout` evaluation set). Evaluation
sets: that held-out slice, MT-Bench (80 x 2 turns), GSM8K test (first `--gsm8k-test`).

Writes WORK/results.json (every number, the data versions of every input, timings) and
WORK/results.md (the tables for bench/RESULTS.md); `--out DIR` copies them there.

    python bench/real_target_experiment.py --real-data ../shared/data/real --gguf SmolLM2-135M-Instruct.Q4_1.gguf \\
        --work /tmp/exp --gpus 2                 # the experiment (one H200 x2 machine, ~15 min)
    python bench/real_target_experiment.py ... --smoke --device cpu   # the same path in miniature, on CPU
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = {  # partition key → (file under --real-data, how it is read, alpaca fields)
    "gsm8k": ("gsm8k/train.jsonl", {"preset": "gsm8k"}),
    "codealpaca": ("codealpaca/code_alpaca_2k.json", {"preset": "codealpaca-20k"}),
    "gpteacher-codegen": ("gpteacher/codegen-instruct.json", {"format": "alpaca"}),
    "gpteacher-roleplay": ("gpteacher/roleplay-instruct.json", {"format": "alpaca"}),
}
T0 = time.time()


def say(msg: str) -> None:
    print(f"[experiment {time.time() - T0:6.0f}s] {msg}", flush=True)


def _yaml(path: Path, data: dict) -> None:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _read_rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return json.loads(path.read_text())


def _user_text(key: str, row: dict) -> tuple[str, str]:
    if key == "gsm8k":
        return row["question"], row["answer"]
    inp = (row.get("input") or "").strip()
    text = row["instruction"] + (f"\n\n{inp}" if inp else "")
    return text, row.get("output", row.get("response", ""))


def build_inputs(real: Path, work: Path, per_source: int, sample: int | None) -> dict:
    """Training files (each source minus its last `per_source` rows) and the held-out set."""
    inputs, held = {}, []
    for key, (rel, _) in SOURCES.items():
        rows = _read_rows(real / rel)
        train, tail = rows[:-per_source], rows[-per_source:]
        if sample:
            train = train[:sample]
        out = work / "inputs" / Path(rel).name
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".jsonl":
            out.write_text("".join(json.dumps(r) + "\n" for r in train))
        else:
            out.write_text(json.dumps(train))
        inputs[key] = out
        for i, r in enumerate(tail):
            q, a = _user_text(key, r)
            held.append(
                {
                    "id": f"{key}-heldout-{i}",
                    "source": key,
                    "category": key,
                    "conversations": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                }
            )
    (work / "inputs" / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held))
    return {k: str(v) for k, v in inputs.items()}


def write_configs(a, work: Path, inputs: dict, servers: list[str], served_name: str) -> dict[str, Path]:
    import yaml

    base = yaml.safe_load((REPO / "configs" / "sources.yaml").read_text())
    base["sources"] = {k: {**how, "data_path": inputs[k]} for k, (_, how) in SOURCES.items()}
    dirs = {}
    for arm in ("original", "regenerated"):
        d = work / "configs" / arm
        if d.exists():
            shutil.rmtree(d)
        shutil.copytree(REPO / "configs", d)
        _yaml(d / "sources.yaml", base)
        regen = {
            "enabled": arm == "regenerated",
            "server_addresses": servers,
            "model": served_name,
            "max_tokens": a.max_tokens,
            "temperature": 0.7,
            "seed": 0,
            "concurrency": a.concurrency,
            "request_timeout_s": 900,
            "progress_interval_s": 30,
        }
        _yaml(d / "regenerate.yaml", {"defaults": regen, "sources": {}})
        _yaml(d / "target.yaml", {"path": str(work / "target"), "chat_template": "auto", "trust_remote_code": False})
        mix = yaml.safe_load((REPO / "configs" / "mix.yaml").read_text())
        mix["eval"] = {"fraction": 0.0, "min_rows": 32, "max_rows": 32}  # evaluation uses the explicit sets below
        _yaml(d / "mix.yaml", mix)
        tok = yaml.safe_load((REPO / "configs" / "tokenize.yaml").read_text())
        tok.update({"chat_template": None, "max_length": a.max_length})
        _yaml(d / "tokenize.yaml", tok)
        train = yaml.safe_load((REPO / "configs" / "train.yaml").read_text())
        train["launch"].update({"device": a.device, "nproc_per_node": 1, "mode": "online"})
        train["training"] = {
            "ttt_length": a.ttt,
            "lr": a.lr,
            "max_steps": a.steps,
            "batch_size": a.batch_size,
            "max_length": a.max_length,
            "save_every": max(a.steps, 1),
            "seed": 0,
        }
        real = Path(a.real_data).resolve()
        train["evaluation"] = {
            "k": [4, 7],
            "max_new_tokens": a.eval_tokens,
            "num_prompts": 10_000,
            "max_prompt_tokens": 384,
            "untrained_seed": 0,
            "evaluate_previous": True,
            "device": a.device,
            "workers": a.eval_workers,
            "sets": [
                {"name": "heldout", "path": str(work / "inputs" / "heldout.jsonl"), "format": "heldout"},
                {
                    "name": "mt_bench",
                    "path": str(real / "mt_bench" / "question.jsonl"),
                    "format": "mtbench",
                    "limit": a.mt_bench,
                },
                {
                    "name": "gsm8k_test",
                    "path": str(real / "gsm8k" / "test.jsonl"),
                    "format": "questions",
                    "limit": a.gsm8k_test,
                },
            ],
        }
        _yaml(d / "train.yaml", train)
        dirs[arm] = d
    return dirs


def stage_env(work: Path, config_dir: Path, gpus: str | None) -> dict:
    env = {
        **os.environ,
        "SPECFORGE_DATA_ROOT": str(work / "data"),
        "SPECFORGE_CONFIG_DIR": str(config_dir),
        "DAGSTER_HOME": str(work / "dagster_home"),
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "PYTHONUNBUFFERED": "1",
    }
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
    return env


def start_stage(work: Path, name: str, config_dir: Path, steps: list[str], gpus: str | None = None) -> subprocess.Popen:
    """A stage = one child process that materializes `steps` (see :func:`stage_main`)."""
    log = open(work / "logs" / f"{name}.log", "w")
    say(f"stage {name}: {' + '.join(steps)} (config {config_dir.name}, GPUs {gpus})")
    return subprocess.Popen(
        [sys.executable, __file__, "--stage", ",".join(steps)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=stage_env(work, config_dir, gpus),
    )


def wait(p: subprocess.Popen, name: str, work: Path) -> float:
    rc = p.wait()
    if rc != 0:
        tail = (work / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
        raise SystemExit(f"stage {name} failed (exit {rc}):\n{tail}")
    say(f"stage {name} done")
    return time.time() - T0


def stage_main(steps: list[str]) -> int:
    """In a child process: materialize the named steps with the project's Definitions, in the
    instance under $DAGSTER_HOME, like `specforge-assets demo` does (partitions one by one)."""
    import dagster as dg

    from specforge_assets import keys
    from specforge_assets.demo import materialize_selection
    from specforge_assets.partitions import configured_source_keys, sync_source_partitions

    instance = dg.DagsterInstance.get()
    parts = configured_source_keys()
    sync_source_partitions(instance, parts)
    groups = {
        "sources": ([keys.SOURCES], True),
        "sources+regenerated": ([keys.SOURCES, keys.REGENERATED], True),
        "regenerated": ([keys.REGENERATED], True),
        "target": ([keys.TARGET], False),
        "data": ([keys.MIX, keys.TOKENIZED, keys.VOCAB], False),
        "draft": ([keys.DRAFT], False),
        "evaluation": ([keys.EVALUATION], False),
    }
    for step in steps:
        sel, partitioned = groups[step]
        for pk in parts if partitioned else [None]:
            t0 = time.time()
            ok = materialize_selection(instance, sel, pk, trigger="real_target_experiment")
            print(
                f"[stage] {step}{f' [{pk}]' if pk else ''}: {'ok' if ok else 'FAILED'} in {time.time() - t0:.0f}s",
                flush=True,
            )
            if not ok:
                return 1
    return 0


def start_servers(a, work: Path, served_name: str) -> tuple[list[subprocess.Popen], list[str]]:
    import httpx

    procs, addrs = [], []
    devices = [f"cuda:{g}" for g in range(a.gpus)] if a.device != "cpu" else ["cpu"]
    port = 30100
    for dev in devices:
        for _ in range(a.servers_per_gpu):
            log = open(work / "logs" / f"server-{port}.log", "w")
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(REPO / "bench" / "batch_server.py"),
                        str(work / "target"),
                        "--port",
                        str(port),
                        "--device",
                        dev,
                        "--max-batch",
                        str(a.concurrency),
                        "--served-name",
                        served_name,
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            addrs.append(f"127.0.0.1:{port}")
            port += 1
    t0 = time.time()
    for addr in addrs:
        while True:
            try:
                if httpx.get(f"http://{addr}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() - t0 > 300:
                raise SystemExit(f"server {addr} did not start")
            time.sleep(1)
    say(f"{len(addrs)} batching servers up on {devices} in {time.time() - t0:.0f}s")
    return procs, addrs


def collect(a, work: Path, timings: dict, servers: list[str]) -> dict:
    data = work / "data"
    rep = json.loads((data / "models" / "draft_evaluation" / "report.json").read_text())
    man_new = json.loads((data / "models" / "draft_model" / "manifest.json").read_text())
    man_old = json.loads((data / "models" / "draft_model_previous" / "manifest.json").read_text())
    metrics = {
        n: json.loads((data / "models" / d / "metrics.json").read_text())
        if (data / "models" / d / "metrics.json").exists()
        else {}
        for n, d in (("regenerated", "draft_model"), ("original", "draft_model_previous"))
    }
    regen = {}
    for key in SOURCES:
        m = data / "regenerated" / key / "manifest.json"
        if m.exists():
            regen[key] = json.loads(m.read_text())
    table = []
    for name, by_k in rep["sets"].items():
        for k, e in by_k.items():
            table.append(
                {
                    "set": name,
                    "k": int(k),
                    "category": "(all)",
                    "n": e["num_prompts"],
                    "turns": e["num_turns"],
                    "untrained": e["untrained_acceptance_length"],
                    "original": e.get("previous_acceptance_length"),
                    "regenerated": e["acceptance_length"],
                    "lossless": e["lossless"],
                }
            )
            for cat, c in sorted(e["per_category"].items()):
                if len(e["per_category"]) > 1:
                    table.append(
                        {
                            "set": name,
                            "k": int(k),
                            "category": cat,
                            "n": c["n"],
                            "untrained": c["untrained_acceptance_length"],
                            "original": c.get("previous_acceptance_length"),
                            "regenerated": c["acceptance_length"],
                            "lossless": None,
                        }
                    )
    return {
        "settings": {k: v for k, v in vars(a).items() if k not in ("stage",)},
        "servers": servers,
        "timings_s": timings,
        "table": table,
        "report": {k: rep[k] for k in ("lossless", "ks", "eval_sets", "seconds", "previous", "checkpoint_version")},
        "draft_regenerated": {"manifest_inputs": man_new.get("inputs"), "metrics": metrics["regenerated"]},
        "draft_original": {"manifest_inputs": man_old.get("inputs"), "metrics": metrics["original"]},
        "regeneration": regen,
    }


def markdown(res: dict) -> str:
    def f(v):
        return "–" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    lines = [
        "Acceptance length (tokens per target forward, bonus token included):",
        "",
        "| set | k | category | n | untrained | original | regenerated | lossless |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["table"]:
        lines.append(
            f"| {r['set']} | {r['k']} | {r['category']} | {r['n']} | {f(r['untrained'])} | {f(r['original'])} | "
            f"{f(r['regenerated'])} | {f(r['lossless'])} |"
        )
    lines += [
        "",
        "Regeneration (regenerated/conversations, per partition):",
        "",
        "| source | rows | success | error | rows/s | completion tokens/s | finish: length | data version |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, m in res["regeneration"].items():
        c, fr = m.get("counts", {}), m.get("finish_reasons", {})
        turns = sum(fr.values()) or 1
        lines.append(
            f"| {key} | {m.get('input_rows')} | {c.get('success')} | {c.get('error')} | {f(m.get('rows_per_s'))} | "
            f"{f(m.get('completion_tokens_per_s'))} | {fr.get('length', 0) / turns:.1%} | {str(m.get('data_version'))[:12]} |"
        )
    lines += [
        "",
        "Inputs of each draft (data versions the platform recorded):",
        "",
        "| draft | input | data version |",
        "|---|---|---|",
    ]
    for who in ("original", "regenerated"):
        for name, v in sorted((res[f"draft_{who}"]["manifest_inputs"] or {}).items()):
            lines.append(f"| {who} | {name} | {str((v or {}).get('data_version'))[:16]} |")
    lines += ["", "Timings (seconds since start): " + ", ".join(f"{k} {v:.0f}" for k, v in res["timings_s"].items())]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--real-data", default=str(REPO.parent / "shared" / "data" / "real"))
    ap.add_argument("--gguf", help="SmolLM2-135M-Instruct.Q4_1.gguf (imported with `specforge-assets import-target`)")
    ap.add_argument("--target", help="an HF folder of the target instead of --gguf")
    ap.add_argument("--work", default="/tmp/real_target_experiment")
    ap.add_argument("--out", help="copy results.json / results.md / logs here")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--gpus", type=int, default=2)
    ap.add_argument("--servers-per-gpu", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=512, help="requests in flight per server (= its batch)")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--heldout-per-source", type=int, default=16)
    ap.add_argument("--sample", type=int, default=None, help="keep the first N training rows per source")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--ttt", type=int, default=7)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--eval-tokens", type=int, default=64)
    ap.add_argument("--eval-workers", type=int, default=16)
    ap.add_argument("--mt-bench", type=int, default=80)
    ap.add_argument("--gsm8k-test", type=int, default=300)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, to check the path (CPU)")
    a = ap.parse_args()
    if a.stage:
        return stage_main(a.stage.split(","))
    if a.smoke:
        a.sample, a.heldout_per_source, a.max_tokens, a.steps, a.batch_size = 6, 2, 12, 2, 4
        a.eval_tokens, a.eval_workers, a.mt_bench, a.gsm8k_test, a.concurrency = 4, 2, 2, 2, 8
        a.servers_per_gpu, a.max_length, a.ttt = 1, 256, 2
    work = Path(a.work).resolve()
    if work.exists():
        shutil.rmtree(work)
    (work / "logs").mkdir(parents=True)
    (work / "dagster_home").mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", work / "dagster_home" / "dagster.yaml")
    timings: dict[str, float] = {}
    if a.target:
        shutil.copytree(a.target, work / "target")
    else:
        say(f"importing {a.gguf}")
        subprocess.run(
            [sys.executable, "-m", "specforge_assets.cli", "import-target", a.gguf, "--output", str(work / "target")],
            cwd=REPO,
            check=True,
        )
    timings["import_target"] = time.time() - T0
    inputs = build_inputs(Path(a.real_data), work, a.heldout_per_source, a.sample)
    served = "SmolLM2-135M-Instruct"
    servers_needed = [f"127.0.0.1:{30100 + i}" for i in range((a.gpus if a.device != "cpu" else 1) * a.servers_per_gpu)]
    cfg = write_configs(a, work, inputs, servers_needed, served)
    gpu0, gpu1 = ("0", "1") if a.device != "cpu" and a.gpus > 1 else (None, None)
    s1 = start_stage(work, "1-original-data", cfg["original"], ["target", "sources+regenerated", "data"])
    procs, servers = start_servers(a, work, served)
    try:
        timings["original_data_done"] = wait(s1, "1-original-data", work)
        s1b = start_stage(work, "1b-original-draft", cfg["original"], ["draft"], gpus=gpu0)
        s2 = start_stage(work, "2-regenerate", cfg["regenerated"], ["regenerated"])
        timings["regenerated_done"] = wait(s2, "2-regenerate", work)
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, 15)
            except ProcessLookupError:
                pass
    s3 = start_stage(work, "3-regenerated-data", cfg["regenerated"], ["data"])
    timings["regenerated_data_done"] = wait(s3, "3-regenerated-data", work)
    # draft 1 must be published first: the evaluation compares the current draft with the previous one
    timings["original_draft_done"] = wait(s1b, "1b-original-draft", work)
    s3b = start_stage(
        work, "3b-regenerated-draft", cfg["regenerated"], ["draft"], gpus=(f"{gpu1},{gpu0}" if gpu1 else None)
    )
    timings["regenerated_draft_done"] = wait(s3b, "3b-regenerated-draft", work)
    s4 = start_stage(work, "4-evaluation", cfg["regenerated"], ["evaluation"])
    timings["evaluation_done"] = wait(s4, "4-evaluation", work)
    res = collect(a, work, timings, servers)
    (work / "results.json").write_text(json.dumps(res, indent=2))
    (work / "results.md").write_text(markdown(res))
    say("results:\n" + markdown(res))
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        for f in ("results.json", "results.md"):
            shutil.copy(work / f, out / f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
