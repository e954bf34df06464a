"""configs/train.yaml: one pydantic model per section, the defaults in one place. No Dagster import.

`train_settings(config)` returns the file as a dict of sections (`TrainFile`): `launch` (how
torchrun runs: processes, device, nodes), `training` (`TrainConfig`: the training loop's settings,
validated here, returned as written so that the run fingerprint only hashes what the file sets;
`make_train_config` gives them with their defaults), `evaluation`, `hidden_states`, `demo_target`
(`DemoTargetSettings`: how `train.demo_target` builds the demo target). An unknown section or key, or a bad value, raises
`TrainInputError`: one line naming the file and the field.
"""

from __future__ import annotations

from dataclasses import dataclass as plain_dataclass
from typing import Any, Literal

from pydantic import ConfigDict, Field, StrictFloat, StrictInt, ValidationInfo, field_validator
from pydantic.dataclasses import dataclass

from ..configmodel import ConfigError, ConfigModel, validate
from .errors import TrainInputError

_RDZV_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass(config=ConfigDict(extra="forbid"))
class TrainConfig:
    """configs/train.yaml `training:`, the training loop's settings (`train.loop.train_draft`):
    the one declaration of each and its default. A (pydantic) dataclass: `dataclasses.asdict`
    gives the run manifest's `train_config`."""

    ttt_length: int = 7
    lr: float = 1e-4
    warmup_ratio: float = 0.015
    min_lr_ratio: float = 0.0
    epochs: int = 1
    max_steps: int | None = Field(default=None, description="optimizer steps; overrides epochs when set")
    batch_size: int = 1  # rows per rank per optimizer step
    max_length: int = 2048
    grad_clip: float = 0.5  # SpecForge --max-grad-norm
    weight_decay: float = 0.0  # SpecForge: 0
    betas: tuple[float, float] = (0.9, 0.95)
    step_weight: float = 0.8  # TTT step i weighs step_weight**i
    seed: int = 0
    dtype: str = "auto"  # auto: bf16 on GPU, fp32 on CPU; or float32/bfloat16
    save_every: int = 0  # steps; 0: only at the end
    keep_checkpoints: int = 2
    log_every: int = 10
    fix_mask_alignment: bool = True  # False reproduces SpecForge's unshifted mask (#885)
    aux_layer_ids: list[int] | None = None
    attn_implementation: str = "sdpa"
    compile: bool | str = "auto"  # torch.compile draft+loss; auto: CUDA only (1.4x), eager fallback on NaN
    draft_init_seed: int | None = None


def make_train_config(values: dict | None, **overrides: Any) -> TrainConfig:
    """`TrainConfig` from a dict (configs/train.yaml `training:`, e.g. `train_settings(...)
    ["training"]`) and keyword overrides (None: as in `values`), every unset field at its default.
    Raises ValueError on an unknown key (``unknown train config keys: [...] (known: [...])``) or
    a bad value (pydantic's ValidationError)."""
    d = {**(values or {}), **{k: v for k, v in overrides.items() if v is not None}}
    known = set(TrainConfig.__dataclass_fields__)
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown train config keys: {unknown} (known: {sorted(known)})")
    return TrainConfig(**d)


class LaunchSettings(ConfigModel):
    """How the draft's training processes run (`torchrun`)."""

    nproc_per_node: StrictInt = Field(default=1, ge=1, description="processes per node (GPUs per node; CPU: 1)")
    device: str = Field(default="auto", description="auto: cuda when a GPU is visible, else cpu; or cpu / cuda")
    threads_per_proc: StrictInt = Field(default=0, ge=0, description="CPU threads per process; 0: cores / nproc")
    mode: Literal["online", "offline"] = Field(
        default="online", description="online: target hidden states computed in training; offline: read them"
    )
    termination_timeout_s: StrictFloat = Field(
        default=60, gt=0, description="seconds torchrun gets to flush a checkpoint when the run is cancelled"
    )
    nnodes: StrictInt = Field(default=1, ge=1, description="nodes in the c10d rendezvous")
    node_rank: StrictInt = Field(default=0, validate_default=True, description="this node (0: the reporting node)")
    rdzv_endpoint: str = Field(default="", validate_default=True, description="HOST:PORT every node reaches")
    rdzv_id: str = Field(default="specforge-draft", validate_default=True, description="rendezvous name")

    @field_validator("node_rank")
    @classmethod
    def _rank_in_range(cls, v: int, info: ValidationInfo) -> int:
        nnodes = info.data.get("nnodes")
        if isinstance(nnodes, int) and not 0 <= v < nnodes:
            raise ValueError(f"want an integer in 0..{nnodes - 1} (nnodes is {nnodes}), got {v!r}")
        return v

    @field_validator("rdzv_endpoint")
    @classmethod
    def _endpoint(cls, ep: str, info: ValidationInfo) -> str:
        nnodes = info.data.get("nnodes")
        if not isinstance(nnodes, int) or nnodes == 1:
            return ep
        if not ep.strip():
            raise ValueError(
                f"nnodes is {nnodes}, so every node needs the rendezvous address HOST:PORT "
                "(a host all nodes reach, usually node 0's)"
            )
        host, sep, port = ep.strip().rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [IPv6]:port
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"want HOST:PORT with a port in 1..65535, got {ep!r}")
        return ep

    @field_validator("rdzv_id")
    @classmethod
    def _rdzv_id(cls, rid: str, info: ValidationInfo) -> str:
        nnodes = info.data.get("nnodes")
        if isinstance(nnodes, int) and nnodes > 1 and (not rid or not set(rid) <= _RDZV_ID_CHARS):
            raise ValueError(
                f"want a non-empty name of letters, digits, '.', '_' or '-' (the same on every node), got {rid!r}"
            )
        return rid


class EvaluationSettings(ConfigModel):
    """The draft's acceptance evaluation (models/draft_evaluation, `specforge-assets evaluate`)."""

    k: StrictInt | list[StrictInt] = Field(default=4, description="draft tokens per target forward; a list: each")
    max_new_tokens: int = Field(default=48, ge=1, description="tokens generated per prompt (per turn)")
    num_prompts: int = Field(default=24, ge=1, description="prompts per set unless the set gives a limit")
    max_prompt_tokens: int = Field(default=384, ge=1, description="longer prompts are skipped")
    untrained_seed: int = Field(default=0, description="the untrained baseline draft's initialisation seed")
    evaluate_previous: bool = Field(default=True, description="also evaluate the previous draft version")
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    workers: int = Field(default=1, ge=1, description="processes, each measuring a slice of the prompts")
    sets: list[Any] | None = Field(
        default=None, description="prompt sets {name, path, format, limit} (checked by eval_report.eval_sets)"
    )

    @field_validator("device", mode="before")
    @classmethod
    def _empty_device_is_default(cls, v: Any) -> Any:
        return cls.model_fields["device"].default if v in ("", None) else v

    @field_validator("k")
    @classmethod
    def _k_positive(cls, v: int | list[int]) -> int | list[int]:
        if any(k < 1 for k in (v if isinstance(v, list) else [v])) or v == []:
            raise ValueError(f"want a positive integer or a non-empty list of them, got {v!r}")
        return v


class HiddenStatesSettings(ConfigModel):
    """Offline target features (models/target_hidden_states)."""

    rows_per_shard: int = Field(default=256, ge=1, description="rows per safetensors shard")
    max_rows: int | None = Field(default=None, ge=1, description="cap (null: the whole tokenized dataset)")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class DemoTargetSettings(ConfigModel):
    """`demo_target:`: how `train.demo_target` builds the small demo target (a ChatML BPE tokenizer
    + a Qwen2 pretrained on the corpus) when configs/target.yaml has no `path`."""

    sources: list[str] | None = Field(default=None, description="corpus sources; null: the configured sources")
    seed: int = Field(default=0, description="tokenizer, weights and batches")
    vocab_size: int = Field(default=1024, ge=1)
    hidden_size: int = Field(default=128, ge=1)
    num_layers: int = Field(default=4, ge=1)
    num_heads: int = Field(default=4, ge=1)
    num_kv_heads: int = Field(default=2, ge=1)
    intermediate_size: int = Field(default=352, ge=1)
    max_position_embeddings: int = Field(default=2048, ge=1)
    pretrain_steps: int = Field(default=200, ge=0, description="0: random weights (a quick build)")
    batch_size: int = Field(default=16, ge=1)
    block_size: int = Field(default=128, ge=1, description="tokens per pretraining sequence")
    lr: float = Field(default=3e-3, gt=0)
    warmup_steps: int = Field(default=20, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)


class TrainFile(ConfigModel):
    """configs/train.yaml. A null section means its defaults."""

    launch: LaunchSettings = Field(default_factory=LaunchSettings)
    training: TrainConfig = Field(default_factory=TrainConfig, description="the training loop's settings")
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    hidden_states: HiddenStatesSettings = Field(default_factory=HiddenStatesSettings)
    demo_target: DemoTargetSettings = Field(default_factory=DemoTargetSettings)


SECTIONS = tuple(TrainFile.model_fields)


def train_settings(config: dict | None = None) -> dict:
    """configs/train.yaml (`config` None: read it) as a dict of validated sections."""
    from ..paths import load_config

    cfg = load_config("train") if config is None else dict(config)
    if not isinstance(cfg, dict):
        raise TrainInputError(f"configs/train.yaml: want a mapping of sections, got {type(cfg).__name__}")
    unknown = sorted(set(cfg) - set(SECTIONS))
    if unknown:
        raise TrainInputError(f"configs/train.yaml: unknown section(s) {unknown}; known: {sorted(SECTIONS)}")
    given = {k: v for k, v in cfg.items() if v is not None}
    training = given.get("training") or {}
    if isinstance(training, dict) and set(training) - set(TrainConfig.__dataclass_fields__):
        unknown = sorted(set(training) - set(TrainConfig.__dataclass_fields__))[0]
        known = ", ".join(sorted(TrainConfig.__dataclass_fields__))
        raise TrainInputError(f"configs/train.yaml: unknown key 'training.{unknown}' (known: {known})")
    try:
        out = validate(TrainFile, given, "configs/train.yaml").model_dump()
    except ConfigError as e:
        raise TrainInputError(str(e)) from None
    out["training"] = dict(training)  # validated; as written (the run fingerprint hashes these)
    return out


@plain_dataclass(frozen=True)
class Override:
    """A setting a run may override: its configs/train.yaml `section`, the help of its
    `specforge-assets train` flag (`--` + the name with dashes), and whether the `trainer` resource
    (the Launchpad) offers it too."""

    section: Literal["launch", "training"]
    help: str
    launchpad: bool = False


# The one list of per-run overrides (`override_settings`): the `specforge-assets train` flags and
# the `trainer` resource's fields (`launchpad`) derive from it. The multi-node settings are
# CLI-only: a Dagster run is always node 0 (node_rank 0) and its partner nodes are started by hand
# with `specforge-assets train --node-rank N`; ttt_length is a CLI flag only, as it always was.
OVERRIDES: dict[str, Override] = {
    "nproc_per_node": Override("launch", "processes per node (GPUs); default launch.nproc_per_node", True),
    "device": Override("launch", "auto | cpu | cuda (default launch.device)", True),
    "mode": Override("launch", "default launch.mode", True),
    "max_steps": Override("training", "override training.max_steps", True),
    "ttt_length": Override("training", "override training.ttt_length"),
    "nnodes": Override("launch", "nodes training together (default launch.nnodes)"),
    "node_rank": Override(
        "launch",
        "this node's rank, 0..nnodes-1 (default launch.node_rank); node 0 prepares and publishes the run, "
        "the others join it",
    ),
    "rdzv_endpoint": Override(
        "launch", "HOST:PORT of the c10d rendezvous, the same on every node (default launch.rdzv_endpoint)"
    ),
    "rdzv_id": Override("launch", "rendezvous name, the same on every node (default launch.rdzv_id)"),
}


def override_field(name: str) -> Any:
    """The pydantic field info of override `name` (`LaunchSettings` or `TrainConfig`): its
    annotation gives the CLI flag's type and choices. Raises KeyError for an unknown name."""
    model: Any = LaunchSettings if OVERRIDES[name].section == "launch" else TrainConfig
    fields = model.model_fields if hasattr(model, "model_fields") else model.__pydantic_fields__
    return fields[name]


def override_settings(settings: dict, **overrides) -> dict:
    """Per-run overrides (CLI flags, the `trainer` resource) over train settings; falsy values
    mean "as configured" (node_rank: None means as configured, 0 is a value). Validated again
    like configs/train.yaml."""
    out = {section: dict(values) for section, values in settings.items()}
    for name, value in overrides.items():
        if value or (name == "node_rank" and value is not None):
            out[OVERRIDES[name].section][name] = value
    return train_settings(out)
