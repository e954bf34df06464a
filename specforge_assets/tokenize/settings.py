"""configs/tokenize.yaml as pydantic models: each setting of the file declared once, with its
default and bounds. `build.tokenize_config` validates the file against `TokenizeFile`; the
`tokenize` / `vocab-mapping` CLI flags and the defaults of `dataset.tokenize_jsonl` (for library
callers) are these fields' defaults. Pure declarations (pydantic only): importable from every
tokenize module without a cycle."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, model_validator

from ..configmodel import ConfigModel


class TokenizeCorrected(ConfigModel):
    """Corrected options (off: parity with SpecForge's preprocess_conversations)."""

    no_system_prompt: bool = Field(default=False, description="don't inject the template's default system prompt")
    shift_mask_885: bool = Field(default=False, description="loss_mask[i] = mask[i+1] (SpecForge#885)")
    incremental_mask: bool = Field(default=False, description="template-agnostic spans from incremental rendering")


class TokenizeChecks(ConfigModel):
    max_zero_supervised_rate: float = Field(default=0.01, ge=0, le=1, description="share of rows with no loss")
    supervised_fraction: tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]] = Field(
        default=(0.02, 0.99), description="[low, high] bounds of the supervised token share"
    )


class TokenizeVocab(ConfigModel):
    draft_vocab_size: int = Field(default=32000, ge=1, description="clamped to the target vocabulary")


# Marks a setting that changes how tokenization runs or is checked, not the tokens it writes
# (worker counts, shard sizes, verification, cache size, check bounds): left out of
# `token_settings`, so editing it marks nothing stale.
_OPERATIONAL: dict[str, Any] = {"operational": True}


class TokenizeFile(ConfigModel):
    """configs/tokenize.yaml. A null value means the default."""

    chat_template: str | None = Field(default=None, description="registry name; null: configs/target.yaml's")
    max_length: int = Field(default=2048, ge=1)
    is_preformatted: bool = Field(default=False, description="rows carry rendered `text` used verbatim")
    train_only_last_turn: bool = False
    corrected: TokenizeCorrected = Field(default_factory=TokenizeCorrected)
    workers: int = Field(
        default=1, ge=1, description="processes tokenizing shards of rows", json_schema_extra=_OPERATIONAL
    )
    shard_rows: int = Field(default=50000, ge=1, description="rows per Parquet shard", json_schema_extra=_OPERATIONAL)
    verify_every: int = Field(
        default=0,
        ge=0,
        description="every N-th row re-checked with SpecForge's straightforward algorithm (0: off, as SpecForge)",
        json_schema_extra=_OPERATIONAL,
    )
    templates: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="extra registry templates (fields of tokenize/templates.yaml)"
    )
    checks: TokenizeChecks = Field(default_factory=TokenizeChecks, json_schema_extra=_OPERATIONAL)
    vocab_mapping: TokenizeVocab = Field(default_factory=TokenizeVocab)  # the vocab mapping's own input
    cache_keep: int = Field(
        default=3, ge=0, description="tokenized/cache/ entries kept (0: all)", json_schema_extra=_OPERATIONAL
    )

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data
