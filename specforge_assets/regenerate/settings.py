"""What a regeneration run asks of the server: model, sampling, reasoning mode, limits, pool.

The knobs are declared once, here, as pydantic fields (bounds and choices on the field):
`RequestSettings` holds those a user sets (configs/regenerate.yaml, the Launchpad run config and
the `specforge-assets regenerate` flags all derive from it); `RegenSettings` is what one run gets
(plus the model name, the request dialect and internal pool tuning). Invalid values raise a
pydantic `ValidationError` (a `ValueError`) naming the field.

`RegenSettings.fingerprint()` covers everything that changes the *content* of the output;
a partial run (journal) made under another fingerprint is never silently continued.
"""

from __future__ import annotations

import json
import zlib
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..fileio import sha256_json

Reasoning = Literal["none", "save", "disable"]
Dialect = Literal["openai", "transformers"]
# What happens to valid rows beyond `num_samples`: SpecForge simply never writes them; we
# account for each one, either in skipped.jsonl ("skip") or unchanged in train.jsonl ("passthrough").
BeyondLimit = Literal["skip", "passthrough"]


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


class RequestSettings(BaseModel):
    """The user's knobs of a regeneration run (sampling, limits, pool), each declared once with
    its default: SpecForge's regenerate_train_data.py behaviour (the CLI's). The shipped
    configs/regenerate.yaml `defaults:` sets `seed`, `beyond_limit` and `progress_interval_s`
    otherwise for the Dagster assets (and says why); `config.SourceRegeneration` only adds the
    asset's own settings."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(default=4096, gt=0, description="completion tokens per turn")
    temperature: float = Field(default=0.7, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=-1)
    min_p: float | None = Field(default=None, ge=0, le=1)
    repetition_penalty: float | None = Field(
        default=None, gt=0, description="a real repetition_penalty in the request body (not presence_penalty)"
    )
    seed: int | None = Field(
        default=None, description="base seed; each row and turn gets a derived seed (null: none sent)"
    )
    reasoning: Reasoning = Field(default="none", description="none | save | disable (SpecForge's rules)")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="merged into every request body")
    num_samples: int | None = Field(default=None, ge=0, description="cap on submitted (valid) rows")
    beyond_limit: BeyondLimit = Field(
        default="skip", description="rows past num_samples: skip (to the skipped file) or passthrough (unchanged)"
    )
    concurrency: int = Field(default=64, ge=1, description="in-flight requests per server")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="seconds to connect")
    request_timeout_s: float = Field(default=600.0, gt=0, description="seconds per read/write of a request")
    max_attempts: int = Field(default=6, ge=1, description="attempts per request (transient errors only)")
    lock_wait_s: float = Field(
        default=0.0, ge=0, description="seconds to wait while another run writes the same output (0: refuse at once)"
    )
    progress_interval_s: float = Field(
        default=5.0, gt=0, description="seconds between progress lines (rows, rows/s, tokens/s, ETA)"
    )

    @field_validator("extra_body")
    @classmethod
    def _extra_body_keys(cls, v: dict) -> dict:
        for k in ("model", "messages", "stream"):
            if k in v:
                raise ValueError(f"extra_body may not set {k!r}")
        return v


# The fields of `RequestSettings`: what a source config hands to a run.
SETTINGS_KEYS = tuple(RequestSettings.model_fields)


class RegenSettings(RequestSettings):
    """One run's settings: the user's knobs, the model name sent in requests, the request dialect,
    and pool tuning that no config file exposes (tests shorten it)."""

    model: str = Field(min_length=1, description="model name sent in each request")
    # "openai": sampling extras as top-level body fields (SGLang, vLLM, most servers);
    # "transformers": `transformers serve` rejects unknown fields, so top_k/min_p/repetition_penalty
    # travel in its `generation_config` JSON field.
    dialect: Dialect = Field(
        default="openai",
        description="transformers: for `transformers serve` (top_k/min_p/repetition_penalty go into its "
        "generation_config field)",
    )
    # internal pool behaviour (not part of the fingerprint, in no config file)
    backoff_base_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=20.0, gt=0)
    failures_to_eject: int = Field(default=3, ge=1)
    probe_interval_s: float = Field(default=2.0, gt=0)
    all_down_timeout_s: float = Field(default=120.0, gt=0)
    journal_batch: int = Field(default=64, ge=1)
    journal_flush_s: float = Field(default=0.25, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _writable(cls, data: Any) -> Any:
        """The model name and extra body are sent in every request and written in the state file
        and every row's provenance: the one JSON rule (no lone surrogate) applies, by field."""
        from ..jsonrows import RowDecodeError, check_value

        if isinstance(data, dict):
            given = {k: data[k] for k in ("model", "extra_body") if k in data}
            try:
                check_value(given, walk_depth=False)
            except RowDecodeError as e:
                raise ValueError(f"setting {e.field or 'value'}: {e.reason} (not writable as UTF-8)") from None
        return data

    # -- content identity ------------------------------------------------------------------
    CONTENT_FIELDS: ClassVar[tuple[str, ...]] = (
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
