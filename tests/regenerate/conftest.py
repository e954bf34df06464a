"""Fixtures: fault-injecting stub servers (subprocesses) and one real `transformers serve`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parent / "fixtures" / "regenerate"


class Stub:
    def __init__(self, proc: subprocess.Popen, port: int):
        self.proc = proc
        self.port = port
        self.address = f"127.0.0.1:{port}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def stub_server():
    """Factory: stub_server(fail_every=3, ...) -> Stub (killed at teardown)."""
    started: list[Stub] = []

    def start(**faults) -> Stub:
        cmd = [sys.executable, "-m", "specforge_assets.regenerate.stubserver", "--port", "0"]
        for k, v in faults.items():
            cmd += [f"--{k.replace('_', '-')}", str(v)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = proc.stdout.readline()
        assert line.startswith("PORT "), line
        s = Stub(proc, int(line.split()[1]))
        started.append(s)
        return s

    yield start
    for s in started:
        s.kill()


def dead_address() -> str:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def write_rows(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def make_rows(n: int, turns=(1, 2, 3), prefix="r") -> list[dict]:
    rows = []
    for i in range(n):
        conv = [{"role": "system", "content": "be brief"}] if i % 4 == 0 else []
        for t in range(turns[i % len(turns)]):
            conv += [{"role": "user", "content": f"question {i}.{t}"}, {"role": "assistant", "content": "old"}]
        rows.append({"id": f"{prefix}{i}", "conversations": conv, "extra": i})
    return rows


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(l) for l in open(path) if l.strip()]


def ids_across(outputs) -> list:
    out = []
    for p in (outputs.success, outputs.error, outputs.skipped):
        out += [r.get("id") for r in read_jsonl(p)]
    return out


@pytest.fixture(scope="session")
def tiny_target(tmp_path_factory) -> Path:
    """A small random Qwen2 ChatML model (the project's demo-target builder, no pretraining)."""
    out = tmp_path_factory.mktemp("regen-target") / "model"
    texts = [json.dumps(r) for r in make_rows(40)] + ["hello world, the answer is 42"] * 20
    try:
        from specforge_assets.train.demo_target import build_demo_target
    except ImportError:
        sys.path.insert(0, str(HERE))
        from tiny_model import build_tiny_chat_model

        return build_tiny_chat_model(out, texts)
    build_demo_target(out, texts, pretrain_steps=0, seed=0, log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def real_server(tiny_target):
    """`transformers serve` on 127.0.0.1 for the tiny target, shared by the session."""
    from specforge_assets.regenerate.launcher import LocalServer

    srv = LocalServer(tiny_target, backend="transformers", startup_timeout_s=180, log=lambda m: None)
    srv.start()
    yield srv
    srv.stop()
