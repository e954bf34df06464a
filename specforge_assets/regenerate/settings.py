"""What a regeneration run asks of the server: model, sampling, reasoning mode, limits, pool.

`RegenSettings.fingerprint()` covers everything that changes the *content* of the output;
a partial run (journal) made under another fingerprint is never silently continued.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

from ..fileio import sha256_json

REASONING_MODES = ("none", "save", "disable")
DIALECTS = ("openai", "transformers")
# What happens to valid rows beyond `num_samples`: SpecForge simply never writes them; we
# account for each one, either in skipped.jsonl ("skip") or unchanged in train.jsonl ("passthrough").
BEYOND_LIMIT = ("skip", "passthrough")


# Settings of the own HTTP client and its worker processes, removed with them (one aiohttp
# session per server does the requests): still accepted, with a warning, for one release.
DEPRECATED = {
    "workers": "requests run in one process, one aiohttp session per server",
    "transport": "every server goes through aiohttp",
    "connections_per_client": "each server's session holds up to `concurrency` + 2 connections",
}


def deprecation_message(key: str, where: str) -> str:
    """The one-line warning for a removed setting `key` found in `where` (file / flag / config)."""
    return (
        f"{where}: regeneration setting {key!r} is deprecated and ignored ({DEPRECATED[key]}); "
        "remove it — it will be refused in the next release"
    )


def drop_deprecated(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """`cfg` without the `DEPRECATED` keys; each one present (not None) warns once
    (`warnings.warn`, category `RegenSettingDeprecated`, a FutureWarning: shown by default)."""
    import warnings

    for k in DEPRECATED:
        if cfg.get(k) is not None:
            warnings.warn(deprecation_message(k, where), RegenSettingDeprecated, stacklevel=3)
    return {k: v for k, v in cfg.items() if k not in DEPRECATED}


class RegenSettingDeprecated(FutureWarning):
    """A removed regeneration setting was given (FutureWarning: shown to users by default)."""


@dataclass
class RegenSettings:
    model: str
    max_tokens: int = 4096
    temperature: float = 0.7
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    reasoning: str = "none"
    extra_body: dict = field(default_factory=dict)
    # "openai": sampling extras as top-level body fields (SGLang, vLLM, most servers);
    # "transformers": `transformers serve` rejects unknown fields, so top_k/min_p/repetition_penalty
    # travel in its `generation_config` JSON field.
    dialect: str = "openai"
    num_samples: int | None = None
    beyond_limit: str = "skip"
    # pool / client behaviour (not part of the fingerprint)
    concurrency: int = 64  # per server, as in SpecForge
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 600.0
    max_attempts: int = 6
    backoff_base_s: float = 0.5
    backoff_max_s: float = 20.0
    failures_to_eject: int = 3
    probe_interval_s: float = 2.0
    all_down_timeout_s: float = 120.0
    progress_interval_s: float = 5.0
    # a second run on the same output waits this long for the first, then is refused (0: at once)
    lock_wait_s: float = 0.0
    journal_batch: int = 64
    journal_flush_s: float = 0.25

    def __post_init__(self) -> None:
        if not self.model or not isinstance(self.model, str):
            raise ValueError("regeneration needs a model name (`model`)")
        if self.reasoning not in REASONING_MODES:
            raise ValueError(f"reasoning must be one of {REASONING_MODES}, got {self.reasoning!r}")
        if self.dialect not in DIALECTS:
            raise ValueError(f"dialect must be one of {DIALECTS}, got {self.dialect!r}")
        if self.beyond_limit not in BEYOND_LIMIT:
            raise ValueError(f"beyond_limit must be one of {BEYOND_LIMIT}, got {self.beyond_limit!r}")
        if int(self.max_tokens) <= 0:
            raise ValueError(f"max_tokens must be > 0, got {self.max_tokens}")
        if not 0.0 <= float(self.temperature) <= 2.0:
            raise ValueError(f"temperature must be in [0, 2], got {self.temperature}")
        if self.top_p is not None and not 0.0 < float(self.top_p) <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and int(self.top_k) < -1:
            raise ValueError(f"top_k must be >= -1, got {self.top_k}")
        if self.min_p is not None and not 0.0 <= float(self.min_p) <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")
        if self.repetition_penalty is not None and float(self.repetition_penalty) <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.num_samples is not None and int(self.num_samples) < 0:
            raise ValueError(f"num_samples must be >= 0, got {self.num_samples}")
        if int(self.concurrency) < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if int(self.max_attempts) < 1:
            raise ValueError("max_attempts must be >= 1")
        if not isinstance(self.extra_body, dict):
            raise ValueError("extra_body must be a mapping")
        for k in ("model", "messages", "stream"):
            if k in self.extra_body:
                raise ValueError(f"extra_body may not set {k!r}")
        from ..jsonrows import RowDecodeError, check_value

        try:  # sent in every request and written in the state file and every row's provenance
            check_value({"model": self.model, "extra_body": self.extra_body}, walk_depth=False)
        except RowDecodeError as e:
            raise ValueError(f"setting {e.field or 'value'}: {e.reason} (not writable as UTF-8)") from None

    # -- content identity ------------------------------------------------------------------
    CONTENT_FIELDS = (
        "model",
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "repetition_penalty",
        "seed",
        "reasoning",
        "extra_body",
        "num_samples",
        "beyond_limit",
    )

    def sampling(self) -> dict:
        return {
            k: getattr(self, k)
            for k in ("max_tokens", "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "seed")
        }

    def content_config(self) -> dict:
        return {k: getattr(self, k) for k in self.CONTENT_FIELDS}

    def fingerprint(self) -> str:
        return sha256_json(self.content_config())

    @classmethod
    def from_mapping(cls, cfg: dict[str, Any]) -> "RegenSettings":
        """Settings from a flat mapping; None means "the default". The settings of the removed
        own HTTP client (`DEPRECATED`) are dropped with a DeprecationWarning (one release)."""
        cfg = drop_deprecated(cfg, "regeneration settings")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - names)
        if unknown:
            raise ValueError(f"unknown regeneration setting(s): {', '.join(unknown)}")
        # None means "the default" (every optional sampling field defaults to None anyway).
        return cls(**{k: v for k, v in cfg.items() if v is not None})

    # -- request body ----------------------------------------------------------------------
    def turn_seed(self, row_id: str, turn: int) -> int | None:
        """Per-row, per-turn seed derived from the run seed: reproducible and resume-stable."""
        if self.seed is None:
            return None
        return (int(self.seed) * 1_000_003 + zlib.crc32(f"{row_id}#{turn}".encode())) & 0x7FFFFFFF

    def request_body(self, messages: list[dict], seed: int | None) -> dict:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": int(self.max_tokens),
            "temperature": float(self.temperature),
            "stream": False,
        }
        if self.top_p is not None:
            body["top_p"] = float(self.top_p)
        if seed is not None:
            body["seed"] = seed
        extras = {}
        if self.top_k is not None:
            extras["top_k"] = int(self.top_k)
        if self.min_p is not None:
            extras["min_p"] = float(self.min_p)
        if self.repetition_penalty is not None:
            extras["repetition_penalty"] = float(self.repetition_penalty)
        if extras:
            if self.dialect == "transformers":
                gen = {
                    "do_sample": float(self.temperature) > 0,
                    "max_new_tokens": int(self.max_tokens),
                    "temperature": float(self.temperature),
                    **extras,
                }
                if self.top_p is not None:
                    gen["top_p"] = float(self.top_p)
                body["generation_config"] = json.dumps(gen)
            else:
                body.update(extras)
        if self.reasoning in ("save", "disable"):
            kwargs = dict(self.extra_body.get("chat_template_kwargs") or {})
            kwargs["enable_thinking"] = self.reasoning == "save"
            body["chat_template_kwargs"] = kwargs
        for k, v in self.extra_body.items():
            if k == "chat_template_kwargs" and "chat_template_kwargs" in body:
                continue
            body[k] = v
        return body
