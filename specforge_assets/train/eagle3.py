"""EAGLE3 draft model (`LlamaForCausalLMEagle3`), SGLang/SpecForge-compatible checkpoints.

Architecture (SpecForge `llama3_eagle.py`, SGLang `llama_eagle3.py`):

* ``embed_tokens``: the target's input embeddings, copied and frozen (not saved).
* ``fc``: Linear(3·target_H → H, no bias) over the concatenated hidden states of three target
  layers (the "aux" layers, see :func:`aux_layer_ids`).
* ``midlayer``: one Llama decoder layer whose attention takes ``cat(input_layernorm(embeds),
  hidden_norm(hidden))`` (2·H wide); residual from the hidden stream; SwiGLU MLP.
* ``norm`` + ``lm_head`` (H → draft vocab, no bias).
* buffers ``d2t`` (int64[draft_vocab]: target id = draft id + d2t[draft id]) and ``t2d``
  (bool[vocab]).

Training-time test (TTT) attention: at unrolled step i the query at position p attends to the
step-0 keys at positions ≤ p (causal) and to the keys of steps 1..i at position p only, which is
what the draft sees at inference when it drafts its (i+1)-th token from anchor p.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# Tensor names of a SpecForge/SGLang EAGLE3 checkpoint (reference appendix), embeddings excluded.
CHECKPOINT_TENSOR_NAMES = (
    "d2t",
    "t2d",
    "fc.weight",
    "lm_head.weight",
    "norm.weight",
    "midlayer.hidden_norm.weight",
    "midlayer.input_layernorm.weight",
    "midlayer.post_attention_layernorm.weight",
    "midlayer.self_attn.q_proj.weight",
    "midlayer.self_attn.k_proj.weight",
    "midlayer.self_attn.v_proj.weight",
    "midlayer.self_attn.o_proj.weight",
    "midlayer.mlp.gate_proj.weight",
    "midlayer.mlp.up_proj.weight",
    "midlayer.mlp.down_proj.weight",
)


def aux_layer_ids(num_layers: int) -> list[int]:
    """The three target layers whose outputs feed the draft's ``fc``.

    Default (SpecForge/SGLang): ``[1, L//2 - 1, L - 4]`` — layer id ``i`` means the output of
    decoder layer ``i`` (the input of layer ``i + 1``), which is ``hidden_states[i + 1]`` of a
    Hugging Face forward pass.

    Small targets: when the default has duplicates or an id outside ``0 .. L-2`` (e.g. L=4 gives
    ``[1, 1, 0]``), use ``round(linspace(0, L-2, 3))`` instead — three distinct layers spread from
    the first to the second-to-last (L=4 → [0, 1, 2], L=5 → [0, 2, 3], L=6 → [0, 2, 4]). Layer
    ``L-1`` is never chosen: Hugging Face returns it after the final norm.
    """
    if num_layers < 4:
        raise ValueError(f"EAGLE3 needs a target with at least 4 layers (3 distinct aux layers), got {num_layers}")
    ids = [1, num_layers // 2 - 1, num_layers - 4]
    if len(set(ids)) == 3 and all(0 <= i <= num_layers - 2 for i in ids):
        return ids
    hi = num_layers - 2
    out = sorted({int(round(hi * j / 2)) for j in range(3)})
    if len(out) != 3:  # unreachable for L >= 4, kept as a guard
        raise ValueError(f"cannot choose 3 distinct aux layers for {num_layers} layers")
    return out


def _rope_from_target(cfg: Any) -> tuple[float, dict | None]:
    rp = getattr(cfg, "rope_parameters", None)
    if isinstance(rp, dict) and rp:
        theta = float(rp.get("rope_theta", getattr(cfg, "rope_theta", 10000.0) or 10000.0))
        scaling = {k: v for k, v in rp.items() if k != "rope_theta"}
        if scaling.get("rope_type", "default") == "default":
            scaling = None
        return theta, scaling
    theta = float(getattr(cfg, "rope_theta", 10000.0) or 10000.0)
    return theta, getattr(cfg, "rope_scaling", None)


@dataclass
class Eagle3Config:
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int
    draft_vocab_size: int
    target_hidden_size: int
    aux_layer_ids: list[int]
    head_dim: int | None = None
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    max_position_embeddings: int = 4096
    hidden_act: str = "silu"
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    torch_dtype: str = "bfloat16"
    target_num_hidden_layers: int | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if len(self.aux_layer_ids) != 3:
            raise ValueError(f"EAGLE3 needs exactly 3 aux layer ids, got {self.aux_layer_ids}")

    @classmethod
    def from_target_config(
        cls,
        target_cfg: Any,
        *,
        draft_vocab_size: int | None = None,
        aux_layers: list[int] | None = None,
        intermediate_size: int | None = None,
    ) -> "Eagle3Config":
        """Derive the draft config from a Hugging Face target config (what SpecForge's
        auto-generated config copies: vocab/hidden/heads/kv-heads/intermediate/max-pos/eps/act)."""
        L = int(target_cfg.num_hidden_layers)
        theta, scaling = _rope_from_target(target_cfg)
        H = int(target_cfg.hidden_size)
        dtype = getattr(target_cfg, "dtype", None) or getattr(target_cfg, "torch_dtype", None) or "bfloat16"
        return cls(
            hidden_size=H,
            num_attention_heads=int(target_cfg.num_attention_heads),
            num_key_value_heads=int(getattr(target_cfg, "num_key_value_heads", None) or target_cfg.num_attention_heads),
            head_dim=getattr(target_cfg, "head_dim", None) or H // int(target_cfg.num_attention_heads),
            intermediate_size=int(intermediate_size or target_cfg.intermediate_size),
            vocab_size=int(target_cfg.vocab_size),
            draft_vocab_size=int(draft_vocab_size or target_cfg.vocab_size),
            target_hidden_size=H,
            aux_layer_ids=list(aux_layers) if aux_layers is not None else aux_layer_ids(L),
            rms_norm_eps=float(getattr(target_cfg, "rms_norm_eps", 1e-6)),
            rope_theta=theta,
            rope_scaling=scaling,
            max_position_embeddings=int(getattr(target_cfg, "max_position_embeddings", 4096)),
            hidden_act=str(getattr(target_cfg, "hidden_act", "silu")),
            pad_token_id=getattr(target_cfg, "pad_token_id", None),
            bos_token_id=getattr(target_cfg, "bos_token_id", None),
            eos_token_id=getattr(target_cfg, "eos_token_id", None),
            torch_dtype=str(dtype).replace("torch.", ""),
            target_num_hidden_layers=L,
        )

    def to_hf_dict(self) -> dict:
        """config.json as SpecForge/SGLang read it (a Llama config + EAGLE3 fields)."""
        d = {
            "architectures": ["LlamaForCausalLMEagle3"],
            "model_type": "llama",
            "hidden_size": self.hidden_size,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": 1,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling,
            "max_position_embeddings": self.max_position_embeddings,
            "hidden_act": self.hidden_act,
            "vocab_size": self.vocab_size,
            "draft_vocab_size": self.draft_vocab_size,
            "target_hidden_size": self.target_hidden_size,
            "pad_token_id": self.pad_token_id,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "tie_word_embeddings": False,
            "attention_bias": False,
            "mlp_bias": False,
            "pretraining_tp": 1,
            "use_cache": True,
            "torch_dtype": self.torch_dtype,
            "eagle_config": {
                "eagle_aux_hidden_state_layer_ids": list(self.aux_layer_ids),
                "use_aux_hidden_state": True,
            },
        }
        if self.target_num_hidden_layers is not None:
            d["target_num_hidden_layers"] = self.target_num_hidden_layers
        d.update(self.extra)
        return d

    @classmethod
    def from_hf_dict(cls, d: dict) -> "Eagle3Config":
        if "LlamaForCausalLMEagle3" not in (d.get("architectures") or []):
            raise ValueError(f"not an EAGLE3 draft config: architectures={d.get('architectures')}")
        ec = d.get("eagle_config") or {}
        aux = ec.get("eagle_aux_hidden_state_layer_ids")
        if aux is None:
            if d.get("target_num_hidden_layers") is None:
                raise ValueError(
                    "config.json has neither eagle_config.eagle_aux_hidden_state_layer_ids nor target_num_hidden_layers"
                )
            aux = aux_layer_ids(int(d["target_num_hidden_layers"]))
        return cls(
            hidden_size=d["hidden_size"],
            num_attention_heads=d["num_attention_heads"],
            num_key_value_heads=d.get("num_key_value_heads") or d["num_attention_heads"],
            head_dim=d.get("head_dim"),
            intermediate_size=d["intermediate_size"],
            vocab_size=d["vocab_size"],
            draft_vocab_size=d.get("draft_vocab_size") or d["vocab_size"],
            target_hidden_size=d.get("target_hidden_size") or d["hidden_size"],
            aux_layer_ids=list(aux),
            rms_norm_eps=d.get("rms_norm_eps", 1e-6),
            rope_theta=d.get("rope_theta", 10000.0),
            rope_scaling=d.get("rope_scaling"),
            max_position_embeddings=d.get("max_position_embeddings", 4096),
            hidden_act=d.get("hidden_act", "silu"),
            pad_token_id=d.get("pad_token_id"),
            bos_token_id=d.get("bos_token_id"),
            eos_token_id=d.get("eos_token_id"),
            torch_dtype=d.get("torch_dtype", "bfloat16"),
            target_num_hidden_layers=d.get("target_num_hidden_layers"),
        )


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class _Rotary(nn.Module):
    """RoPE with the target's parameters (default and Llama-3 / other HF scalings via
    transformers' rope init functions)."""

    def __init__(self, cfg: Eagle3Config):
        super().__init__()
        inv_freq, self.attention_scaling = self._inv_freq(cfg)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @staticmethod
    def _inv_freq(cfg: Eagle3Config) -> tuple[torch.Tensor, float]:
        dim = cfg.head_dim
        base = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
        default = 1.0 / (cfg.rope_theta**base)
        rs = cfg.rope_scaling
        rtype = (rs or {}).get("rope_type", (rs or {}).get("type", "default")) if rs else "default"
        if rtype == "default":
            return default, 1.0
        try:  # delegate the scaled variants to transformers
            from transformers import LlamaConfig
            from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

            hf = LlamaConfig(
                hidden_size=cfg.hidden_size,
                num_attention_heads=cfg.num_attention_heads,
                head_dim=cfg.head_dim,
                max_position_embeddings=cfg.max_position_embeddings,
                rope_theta=cfg.rope_theta,
                rope_scaling=dict(rs),
            )
            inv, scale = ROPE_INIT_FUNCTIONS[rtype](hf, None)
            return inv.float(), float(scale)
        except Exception as e:  # pragma: no cover - depends on the transformers version
            raise ValueError(f"unsupported rope_scaling {rs!r}: {e}") from e

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(position_ids.device)
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * self.attention_scaling).to(dtype), (emb.sin() * self.attention_scaling).to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x [B, h, T, d]; cos/sin [B, T, d] or [T, d]
    if cos.dim() == 2:
        cos, sin = cos[None], sin[None]
    return x * cos[:, None] + _rotate_half(x) * sin[:, None]


class TTTCache:
    """Keys/values of the unrolled steps: step 0 (all positions, causal) + later steps (diagonal)."""

    def __init__(self) -> None:
        self.k0: torch.Tensor | None = None
        self.v0: torch.Tensor | None = None
        self.diag_k: list[torch.Tensor] = []
        self.diag_v: list[torch.Tensor] = []


def ttt_attention(
    q: torch.Tensor,
    k0: torch.Tensor,
    v0: torch.Tensor,
    diag_k: list[torch.Tensor],
    diag_v: list[torch.Tensor],
    scale: float,
) -> torch.Tensor:
    """Attention of queries (the last Tq positions of the step-0 sequence of length T0) over
    the causal step-0 keys plus, for each later step, the key at the query's own position.

    q [B,h,Tq,d]; k0/v0 [B,h,T0,d]; diag_k[j]/diag_v[j] [B,h,Tq,d] (heads already repeated)."""
    Tq, T0 = q.shape[2], k0.shape[2]
    s0 = torch.matmul(q, k0.transpose(-1, -2)).float() * scale  # [B,h,Tq,T0]
    qpos = torch.arange(T0 - Tq, T0, device=q.device)[:, None]
    kpos = torch.arange(T0, device=q.device)[None, :]
    s0 = s0.masked_fill(kpos > qpos, float("-inf"))
    sd = torch.stack([(q * k).sum(-1) for k in diag_k], dim=-1).float() * scale  # [B,h,Tq,n]
    p = torch.softmax(torch.cat([s0, sd], dim=-1), dim=-1)
    p0, pd = p[..., :T0].to(v0.dtype), p[..., T0:].to(v0.dtype)
    out = torch.matmul(p0, v0)
    for j, v in enumerate(diag_v):
        out = out + pd[..., j : j + 1] * v
    return out


class Eagle3Attention(nn.Module):
    def __init__(self, cfg: Eagle3Config):
        super().__init__()
        self.cfg = cfg
        H, hd = cfg.hidden_size, cfg.head_dim
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.q_proj = nn.Linear(2 * H, self.n_heads * hd, bias=False)
        self.k_proj = nn.Linear(2 * H, self.n_kv * hd, bias=False)
        self.v_proj = nn.Linear(2 * H, self.n_kv * hd, bias=False)
        self.o_proj = nn.Linear(self.n_heads * hd, H, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: TTTCache) -> torch.Tensor:
        B, T, _ = x.shape
        hd = self.cfg.head_dim
        q = self.q_proj(x).view(B, T, self.n_heads, hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv, hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv, hd).transpose(1, 2)
        q, k = _apply_rope(q, cos, sin), _apply_rope(k, cos, sin)
        rep = self.n_heads // self.n_kv
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        if cache.k0 is None:
            cache.k0, cache.v0 = k, v
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            cache.diag_k.append(k)
            cache.diag_v.append(v)
            out = ttt_attention(q, cache.k0, cache.v0, cache.diag_k, cache.diag_v, 1.0 / math.sqrt(hd))
        return self.o_proj(out.transpose(1, 2).reshape(B, T, self.n_heads * hd))


class Eagle3MLP(nn.Module):
    def __init__(self, cfg: Eagle3Config):
        super().__init__()
        H, I = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = nn.Linear(H, I, bias=False)
        self.up_proj = nn.Linear(H, I, bias=False)
        self.down_proj = nn.Linear(I, H, bias=False)
        if cfg.hidden_act not in ("silu", "swish"):
            raise ValueError(f"unsupported hidden_act {cfg.hidden_act!r} (EAGLE3 drafts use silu)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Eagle3DecoderLayer(nn.Module):
    def __init__(self, cfg: Eagle3Config):
        super().__init__()
        H = cfg.hidden_size
        self.hidden_norm = RMSNorm(H, cfg.rms_norm_eps)
        self.input_layernorm = RMSNorm(H, cfg.rms_norm_eps)
        self.self_attn = Eagle3Attention(cfg)
        self.post_attention_layernorm = RMSNorm(H, cfg.rms_norm_eps)
        self.mlp = Eagle3MLP(cfg)

    def forward(self, embeds, hidden, cos, sin, cache: TTTCache) -> torch.Tensor:
        residual = hidden
        x = torch.cat([self.input_layernorm(embeds), self.hidden_norm(hidden)], dim=-1)
        h = residual + self.self_attn(x, cos, sin, cache)
        return h + self.mlp(self.post_attention_layernorm(h))


class LlamaForCausalLMEagle3(nn.Module):
    """The EAGLE3 draft. ``forward`` is not used directly; see :meth:`step` / :meth:`compute_logits`
    (training: :func:`specforge_assets.train.loss.eagle3_ttt_loss`; inference: :meth:`propose`)."""

    def __init__(self, cfg: Eagle3Config):
        super().__init__()
        self.config = cfg
        H = cfg.hidden_size
        self.embed_tokens = nn.Embedding(cfg.vocab_size, H, padding_idx=None)
        self.embed_tokens.weight.requires_grad_(False)
        self.fc = nn.Linear(3 * cfg.target_hidden_size, H, bias=False)
        self.midlayer = Eagle3DecoderLayer(cfg)
        self.norm = RMSNorm(H, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(H, cfg.draft_vocab_size, bias=False)
        self.rotary = _Rotary(cfg)
        self.register_buffer("d2t", torch.zeros(cfg.draft_vocab_size, dtype=torch.long))
        self.register_buffer("t2d", torch.zeros(cfg.vocab_size, dtype=torch.bool))
        self.reset_parameters()
        if cfg.draft_vocab_size == cfg.vocab_size:
            self.t2d.fill_(True)

    def reset_parameters(self, std: float = 0.02) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=std)
            elif isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)

    # -- setup ---------------------------------------------------------------------------------
    def load_embeddings(self, target_model: nn.Module) -> None:
        """Copy the target's input embeddings (kept frozen)."""
        w = target_model.get_input_embeddings().weight
        if tuple(w.shape) != tuple(self.embed_tokens.weight.shape):
            raise ValueError(f"target embeddings {tuple(w.shape)} != draft {tuple(self.embed_tokens.weight.shape)}")
        with torch.no_grad():
            self.embed_tokens.weight.copy_(w.detach().to(self.embed_tokens.weight.dtype))
        self.embed_tokens.weight.requires_grad_(False)

    def load_vocab_mapping(self, d2t: torch.Tensor, t2d: torch.Tensor) -> None:
        if d2t.shape != self.d2t.shape or t2d.shape != self.t2d.shape:
            raise ValueError(
                f"vocab mapping shapes d2t{tuple(d2t.shape)} t2d{tuple(t2d.shape)} do not match the draft "
                f"(draft_vocab_size={self.config.draft_vocab_size}, vocab_size={self.config.vocab_size})"
            )
        ids = torch.arange(d2t.numel()) + d2t.long().cpu()
        if int(t2d.sum()) != d2t.numel() or not bool(t2d.bool().cpu()[ids].all()):
            raise ValueError("inconsistent vocab mapping: t2d does not mark exactly the targets of d2t")
        self.d2t.copy_(d2t.long())
        self.t2d.copy_(t2d.bool())

    def draft_to_target_ids(self) -> torch.Tensor:
        return torch.arange(self.d2t.numel(), device=self.d2t.device) + self.d2t

    # -- compute -------------------------------------------------------------------------------
    def project(self, aux_hidden: torch.Tensor) -> torch.Tensor:
        return self.fc(aux_hidden)

    def step(
        self, input_ids: torch.Tensor, hidden: torch.Tensor, position_ids: torch.Tensor, cache: TTTCache
    ) -> torch.Tensor:
        """One draft step: ``hidden`` is fc(aux) at step 0 or the previous step's output."""
        embeds = self.embed_tokens(input_ids).to(hidden.dtype)
        cos, sin = self.rotary(position_ids, hidden.dtype)
        return self.midlayer(embeds, hidden, cos, sin, cache)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(hidden))

    def forward(self, input_ids, aux_hidden, position_ids=None):  # plain step 0, for convenience
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)
        h = self.step(input_ids, self.project(aux_hidden), position_ids, TTTCache())
        return self.compute_logits(h)

    @torch.no_grad()
    def propose(self, aux_hidden: torch.Tensor, next_ids: torch.Tensor, k: int) -> list[int]:
        """Greedy chain of k draft tokens (target ids).

        aux_hidden [1, n, 3·tH]: the target's aux features at positions 0..n-1; next_ids [1, n]:
        the tokens at positions 1..n (the last one is the newest, target-produced token)."""
        n = next_ids.shape[1]
        cache = TTTCache()
        pos = torch.arange(n, device=next_ids.device)
        h = self.step(next_ids, self.project(aux_hidden), pos, cache)[:, -1:]
        out: list[int] = []
        for j in range(k):
            d = int(self.compute_logits(h)[0, -1].float().argmax())
            tok = d + int(self.d2t[d])
            out.append(tok)
            if j + 1 < k:
                h = self.step(torch.tensor([[tok]], device=next_ids.device), h, pos[-1:], cache)
        return out


def build_draft(
    target_model: nn.Module,
    *,
    draft_vocab_size: int | None = None,
    d2t=None,
    t2d=None,
    aux_layers: list[int] | None = None,
    seed: int | None = None,
) -> LlamaForCausalLMEagle3:
    """A fresh (randomly initialised) draft for `target_model`, embeddings copied and frozen."""
    if d2t is not None:
        draft_vocab_size = int(d2t.numel())
    cfg = Eagle3Config.from_target_config(target_model.config, draft_vocab_size=draft_vocab_size, aux_layers=aux_layers)
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = LlamaForCausalLMEagle3(cfg)
    else:
        model = LlamaForCausalLMEagle3(cfg)
    model.load_embeddings(target_model)
    if d2t is not None:
        model.load_vocab_mapping(d2t, t2d)
    return model


def load_vocab_mapping_file(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """SpecForge's vocab mapping: ``torch.save({"d2t": LongTensor, "t2d": BoolTensor})``.
    A directory is searched for ``vocab_mapping.pt`` or a single ``*.pt``."""
    p = Path(path)
    if p.is_dir():
        cands = [p / "vocab_mapping.pt"] if (p / "vocab_mapping.pt").exists() else sorted(p.glob("*.pt"))
        if len(cands) != 1:
            from .errors import TrainFileNotFound

            raise TrainFileNotFound(
                f"{p}: expected vocab_mapping.pt or exactly one *.pt file, found {[c.name for c in cands]}"
            )
        p = cands[0]
    if not p.is_file():
        from .errors import TrainFileNotFound

        raise TrainFileNotFound(
            f"vocab mapping not found: {p} (run vocab-mapping / materialize tokenized/vocab_mapping; "
            "command-line paths are relative to the current directory)"
        )
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError) as e:  # pickle/zip errors: not a torch file
        from .errors import TrainInputError

        raise TrainInputError(f"{p}: not a SpecForge vocab mapping ({type(e).__name__}: {str(e)[:200]})") from e
    if not isinstance(obj, dict) or "d2t" not in obj or "t2d" not in obj:
        from .errors import TrainInputError

        raise TrainInputError(f"{p}: not a SpecForge vocab mapping (want a dict with 'd2t' and 't2d')")
    return obj["d2t"].long(), obj["t2d"].bool()


def checkpoint_state_dict(model: LlamaForCausalLMEagle3, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The tensors SGLang loads: everything except embeddings (SpecForge drops keys with 'embed')."""
    sd = {}
    for k, v in model.state_dict().items():
        if "embed" in k:
            continue
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        sd[k] = v.contiguous()
    return sd


def save_draft_checkpoint(
    model: LlamaForCausalLMEagle3,
    out_dir: str | Path,
    target_config: Any = None,
    extra_manifest: dict | None = None,
    *,
    dtype: torch.dtype | None = torch.bfloat16,
) -> Path:
    """Write an SGLang-loadable EAGLE3 directory: config.json + model.safetensors (+ manifest.json).

    Files are written to temporary names and renamed, so a crash never leaves a half checkpoint
    that looks complete. ``target_config`` (HF config) only adds provenance to config.json."""
    from safetensors.torch import save_file

    from ..fileio import atomic_write, write_manifest

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    cfg = model.config.to_hf_dict()
    if dtype is not None:
        cfg["torch_dtype"] = str(dtype).replace("torch.", "")
    if target_config is not None:
        cfg["target_model_type"] = getattr(target_config, "model_type", None)
        cfg["target_architectures"] = getattr(target_config, "architectures", None)
    sd = checkpoint_state_dict(model, dtype)
    tmp = out / ".model.safetensors.tmp"
    save_file(sd, str(tmp), metadata={"format": "pt"})
    tmp.replace(out / "model.safetensors")
    with atomic_write(out / "config.json") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    if extra_manifest is not None:
        write_manifest(out, artifact="eagle3_draft", draft_config=cfg, tensors=sorted(sd), **extra_manifest)
    return out


def load_draft_checkpoint(
    path: str | Path, target_model: nn.Module | None = None, *, dtype: torch.dtype = torch.float32
) -> LlamaForCausalLMEagle3:
    """Load a draft directory (ours or SpecForge's); embeddings come from `target_model`."""
    from safetensors.torch import load_file

    p = Path(path)
    cfg_path = p / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{cfg_path}: missing (not an EAGLE3 draft directory)")
    cfg = Eagle3Config.from_hf_dict(json.loads(cfg_path.read_text()))
    model = LlamaForCausalLMEagle3(cfg)
    st = p / "model.safetensors"
    if not st.exists():
        raise FileNotFoundError(f"{st}: missing")
    sd = load_file(str(st))
    embed = {k: v for k, v in sd.items() if "embed" in k}
    sd = {k: v for k, v in sd.items() if "embed" not in k}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if "embed" not in m]
    if missing or unexpected:
        raise ValueError(
            f"{st}: tensor names do not match LlamaForCausalLMEagle3 (missing={missing}, unexpected={unexpected})"
        )
    if target_model is not None:
        model.load_embeddings(target_model)
    elif embed:
        model.embed_tokens.weight.data.copy_(next(iter(embed.values())))
    model = model.to(dtype)
    model.d2t.data = model.d2t.long()
    model.t2d.data = model.t2d.bool()
    return model


def checkpoint_format_problems(folder: str | Path) -> tuple[list[str], dict[str, list[int]]]:
    """Whether a published draft folder is the checkpoint SGLang's EAGLE3 loader reads:
    `config.json` with `architectures: ["LlamaForCausalLMEagle3"]`, `draft_vocab_size`,
    `vocab_size`, `hidden_size`; `model.safetensors` with exactly :data:`CHECKPOINT_TENSOR_NAMES`
    (plus an optional `fc_norm.*`), no embedding (SGLang reuses the target's), `d2t` of shape
    [draft_vocab_size] and `t2d` of shape [vocab_size]. Returns (problems, one line each, empty
    when the format holds; {tensor name: shape}). Reads only the safetensors header."""

    from safetensors import safe_open

    out = Path(folder)
    problems: list[str] = []
    cfg = json.loads((out / "config.json").read_text()) if (out / "config.json").exists() else {}
    if cfg.get("architectures") != ["LlamaForCausalLMEagle3"]:
        problems.append(f"architectures={cfg.get('architectures')}")
    for key in ("draft_vocab_size", "vocab_size", "hidden_size"):
        if key not in cfg:
            problems.append(f"config.json lacks {key}")
    names: list[str] = []
    shapes: dict[str, list[int]] = {}
    if (out / "model.safetensors").exists():
        with safe_open(str(out / "model.safetensors"), "pt") as f:
            names = sorted(f.keys())
            shapes = {k: list(f.get_slice(k).get_shape()) for k in names}
    else:
        problems.append("model.safetensors missing")
    expected = set(CHECKPOINT_TENSOR_NAMES)
    optional = {n for n in names if n.startswith("fc_norm.")}
    if set(names) - optional != expected:
        problems.append(
            f"tensors: missing {sorted(expected - set(names))}, unexpected {sorted(set(names) - expected - optional)}"
        )
    if any("embed" in n for n in names):
        problems.append("embedding weights present (SGLang reuses the target's)")
    if shapes.get("d2t") and cfg.get("draft_vocab_size") and shapes["d2t"] != [cfg["draft_vocab_size"]]:
        problems.append(f"d2t shape {shapes['d2t']} != [draft_vocab_size={cfg['draft_vocab_size']}]")
    if shapes.get("t2d") and cfg.get("vocab_size") and shapes["t2d"] != [cfg["vocab_size"]]:
        problems.append(f"t2d shape {shapes['t2d']} != [vocab_size={cfg['vocab_size']}]")
    return problems, shapes
