"""Launch a local OpenAI-compatible server for a model dir, wait for health, stop it afterwards.

Backends: `transformers serve` (CPU-friendly, always available with `transformers[serving]`) and
`python -m sglang.launch_server` (when sglang is installed). Only the process this module started
(and its process group) is ever signalled.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import typing
from pathlib import Path

import httpx

from ..errors import UserError
from .config import Backend, ServerLaunchSettings

BACKENDS: tuple[str, ...] = typing.get_args(Backend)  # declared with the launch settings


class ServerLaunchError(RuntimeError, UserError):
    """The local server could not be started or did not become healthy."""


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM if the process that launched it dies (even by SIGKILL),
    so a killed run never leaves an orphaned server behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"server backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "sglang" if importlib.util.find_spec("sglang") is not None else "transformers"
    return backend


_LAUNCH = ServerLaunchSettings()  # configs/regenerate.yaml `launch:` defaults, declared once


class LocalServer:
    """Context manager: `with LocalServer(model_dir) as srv: srv.address` -> "127.0.0.1:PORT".
    `backend`, `startup_timeout_s` and `device` default to configs/regenerate.yaml `launch:`'s."""

    def __init__(
        self,
        model_path: str | Path,
        backend: str = _LAUNCH.backend,
        host: str = "127.0.0.1",
        port: int | None = None,
        extra_args: list[str] | None = None,
        startup_timeout_s: float = _LAUNCH.startup_timeout_s,
        device: str = _LAUNCH.device,
        log=print,
        trust_remote_code: bool = False,
    ):
        self.model_path = str(model_path)
        self.backend = resolve_backend(backend)
        self.host = host
        self.port = port or free_port(host)
        self.extra_args = list(extra_args or [])
        self.startup_timeout_s = startup_timeout_s
        self.device = device
        self.log = log
        self.trust_remote_code = trust_remote_code
        self.proc: subprocess.Popen | None = None
        self._logfile = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def dialect(self) -> str:
        return "transformers" if self.backend == "transformers" else "openai"

    @property
    def served_model_name(self) -> str:
        return self.model_path

    def command(self) -> list[str]:
        if self.backend == "transformers":
            cmd = [
                sys.executable,
                "-m",
                "transformers.cli.transformers",
                "serve",
                self.model_path,
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--device",
                self.device,
                "--log-level",
                "warning",
            ]
            if self.trust_remote_code:
                cmd.append("--trust-remote-code")
        else:
            cmd = [
                sys.executable,
                "-m",
                "sglang.launch_server",
                "--model-path",
                self.model_path,
                "--host",
                self.host,
                "--port",
                str(self.port),
            ]
            if self.trust_remote_code:
                cmd.append("--trust-remote-code")
        return cmd + self.extra_args

    def start(self) -> "LocalServer":
        if self.backend == "transformers" and importlib.util.find_spec("fastapi") is None:
            raise ServerLaunchError(
                "`transformers serve` needs its serving extras: pip install 'transformers[serving]'"
            )
        if not Path(self.model_path).exists():
            raise ServerLaunchError(
                f"model dir {self.model_path} does not exist (materialize models/target_model or set model_path)"
            )
        self._logfile = tempfile.NamedTemporaryFile(
            "w+b", prefix="specforge-regen-server-", suffix=".log", delete=False
        )
        env = dict(os.environ)
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        env["HF_HUB_OFFLINE"] = env.get("HF_HUB_OFFLINE", "1")
        self.log(f"starting {self.backend} server for {self.model_path} on {self.address}")
        self.proc = subprocess.Popen(
            self.command(),
            stdout=self._logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        deadline = time.monotonic() + self.startup_timeout_s
        with httpx.Client(timeout=2.0, trust_env=False) as c:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise ServerLaunchError(
                        f"{self.backend} server exited with code {self.proc.returncode} "
                        f"before answering; last output:\n{self.tail()}"
                    )
                try:
                    if c.get(f"http://{self.address}/health").status_code == 200:
                        self.log(f"{self.backend} server on {self.address} is healthy")
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.25)
        self.stop()
        raise ServerLaunchError(
            f"{self.backend} server did not become healthy within "
            f"{self.startup_timeout_s:.0f}s; last output:\n{self.tail()}"
        )

    def tail(self, n: int = 2000) -> str:
        if not self._logfile:
            return ""
        try:
            with open(self._logfile.name, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - n))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, grace_s: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # our own session: the server and its children only
            except ProcessLookupError:
                pass
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)
        if self._logfile is not None:
            self._logfile.close()
            try:
                os.unlink(self._logfile.name)
            except OSError:
                pass
            self._logfile = None

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
