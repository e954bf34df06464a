"""Online EAGLE3 training: the frozen target computes aux hidden states and logits in the same
process, the draft is trained with unrolled TTT steps (see ``loss.py``).

Runs single-process or under ``torchrun`` (DDP when ``torch.distributed`` is initialised: gloo
on CPU, NCCL on GPU, one ``DistributedSampler`` shard per rank). Only rank 0 logs, calls
``metrics_cb`` and writes files. Training state (draft weights, optimizer, scheduler, step,
position in the epoch, RNG) is checkpointed atomically under ``out_dir/training_state/`` every
``save_every`` steps and at the end; a rerun with ``resume=True`` continues from the latest.
"""

from __future__ import annotations

import json
import math
import random
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from . import ranks
from .data import TokenizedDataset, collate, load_tokenized
from .eagle3 import LlamaForCausalLMEagle3, build_draft, load_vocab_mapping_file, save_draft_checkpoint
from .loss import TTTLossModule
from .settings import TrainConfig

STATE_DIR = "training_state"


def dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) of the initialised torch.distributed group; (0, 1, 0)
    without one (a process that did not join a group trains alone)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), ranks.local_rank(default=dist.get_rank())
    return 0, 1, 0


def resolve_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype:
    if cfg.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }[cfg.dtype]


@torch.no_grad()
def target_features(
    target: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, aux_layers: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(aux hidden [B,T,3H] = outputs of decoder layers `aux_layers`, logits [B,T,V])."""
    L = target.config.num_hidden_layers
    for i in aux_layers:
        if not 0 <= i <= L - 2:
            raise ValueError(f"aux layer id {i} outside 0..{L - 2} for a {L}-layer target")
    out = target(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, use_cache=False)
    hs = out.hidden_states  # hs[0] embeddings, hs[i+1] output of layer i
    aux = torch.cat([hs[i + 1] for i in aux_layers], dim=-1)
    return aux, out.logits


def format_duration(seconds: float | None) -> str:
    """`45s`, `1m23s`, `2h05m`; `?` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def eta_seconds(elapsed_s: float, steps_done: int, steps_left: int) -> float | None:
    """Remaining time from the mean step time of this run so far (None before the first step)."""
    if steps_done <= 0:
        return None
    return max(0, steps_left) * elapsed_s / steps_done


def progress_line(
    step: int,
    total: int,
    loss: float,
    acc: list[float],
    lr: float,
    tokens_per_s: float,
    elapsed_s: float,
    eta_s: float | None,
) -> str:
    """`step 10/200 loss 1.2345 acc 0.41 0.22 lr 1.00e-04 1646 tok/s, elapsed 12s, ETA 3m48s`."""
    return (
        f"step {step}/{total} loss {loss:.4f} acc "
        + " ".join(f"{a:.2f}" for a in acc)
        + f" lr {lr:.2e} {tokens_per_s:.0f} tok/s, elapsed {format_duration(elapsed_s)}, "
        + f"ETA {format_duration(eta_s)}"
    )


def lr_lambda(total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        prog = min(1.0, (step - warmup_steps) / span)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * prog))

    return f


def is_compiler_error(e: BaseException) -> bool:
    """True for failures of torch.compile itself (Dynamo tracing, Inductor code generation or the
    backend compiler), as opposed to errors of the computation (shapes, out of memory, NaN)."""
    names = {
        "BackendCompilerFailed",
        "InductorError",
        "InternalTorchDynamoError",
        "LoweringException",
        "CompilationError",
        "Unsupported",
    }
    seen = 0
    while e is not None and seen < 8:
        mod = type(e).__module__ or ""
        if type(e).__name__ in names and (
            mod.startswith("torch._dynamo") or mod.startswith("torch._inductor") or mod.startswith("triton")
        ):
            return True
        e, seen = (e.__cause__ or e.__context__), seen + 1
    return False


class Eagle3Trainer:
    """Optimizer/scheduler/step logic shared by :func:`train_draft` and the GPU benchmark."""

    def __init__(
        self,
        cfg: TrainConfig,
        target: torch.nn.Module,
        draft: LlamaForCausalLMEagle3,
        device: torch.device,
        total_steps: int,
    ):
        self.cfg, self.target, self.draft, self.device = cfg, target, draft, device
        self.rank, self.world, _ = dist_info()
        self.aux_layers = list(draft.config.aux_layer_ids)
        self.amp_dtype = resolve_dtype(cfg, device)
        self.module = TTTLossModule(
            draft, ttt_length=cfg.ttt_length, fix_alignment=cfg.fix_mask_alignment, step_weight=cfg.step_weight
        )
        call: torch.nn.Module = self.module
        if self.world > 1:
            call = torch.nn.parallel.DistributedDataParallel(
                self.module, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
            )
        use_compile = (device.type == "cuda") if cfg.compile == "auto" else bool(cfg.compile)
        self.eager_call = call
        self.call = torch.compile(call) if use_compile else call
        self.compile_disabled: str | None = None
        self.skipped_steps = 0
        params = [p for p in draft.parameters() if p.requires_grad]
        kw = {"fused": True} if device.type == "cuda" else {}
        self.optimizer = torch.optim.AdamW(
            params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, **kw
        )
        warm = int(round(cfg.warmup_ratio * total_steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(total_steps, warm, cfg.min_lr_ratio)
        )
        self.step_num = 0

    def autocast(self):
        if self.device.type == "cuda" and self.amp_dtype != torch.float32:
            return torch.autocast("cuda", dtype=self.amp_dtype)
        return nullcontext()

    def _forward_backward(self, call, ids, aux, logits, mask):
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss, out = call(ids, aux, logits, mask)
        loss.backward()
        # the norm is always computed (max_norm=inf when clipping is off) for the finiteness guard
        gnorm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.cfg.grad_clip or float("inf"))
        return loss, out, gnorm

    def train_step(self, batch: dict) -> dict:
        """One optimizer step (device tensors out).

        Non-finite guard: if the gradient norm is not finite, a compiled step is redone eagerly
        and compilation is switched off for the rest of the run (torch.compile produced NaN
        gradients on right-padded bf16 batches on H100, torch 2.11); if the eager gradient is
        still not finite the update is skipped and counted in ``skipped_steps``. DDP gradients
        are all-reduced before the norm, so every rank takes the same branch.
        """
        ids = batch["input_ids"].to(self.device, non_blocking=True)
        mask = batch["loss_mask"].to(self.device, non_blocking=True)
        attn = batch.get("attention_mask")
        attn = attn.to(self.device, non_blocking=True) if attn is not None and not bool(attn.all()) else None
        aux, logits = target_features(self.target, ids, attn, self.aux_layers)
        self.draft.train()
        try:
            loss, out, gnorm = self._forward_backward(self.call, ids, aux, logits, mask)
        except Exception as e:  # noqa: BLE001 - only compiler failures are caught, the rest re-raised
            if self.call is self.eager_call or not is_compiler_error(e):
                raise
            # torch.compile is an optimization: a compiler crash (seen: an Inductor assertion when a
            # new sequence length triggered a dynamic-shape recompile, torch 2.11, H200) must not end
            # a training run. The step is redone eagerly and the run continues without compilation.
            self.compile_disabled = (
                f"compiler failure at step {self.step_num + 1}: "
                f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
            )
            self.call = self.eager_call
            loss, out, gnorm = self._forward_backward(self.call, ids, aux, logits, mask)
        if not bool(torch.isfinite(gnorm)):
            if self.call is not self.eager_call:
                self.compile_disabled = f"non-finite gradient from the compiled step at step {self.step_num + 1}"
                self.call = self.eager_call
                loss, out, gnorm = self._forward_backward(self.call, ids, aux, logits, mask)
        del aux, logits
        if bool(torch.isfinite(gnorm)):
            self.optimizer.step()
        else:
            self.skipped_steps += 1
            self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step_num += 1
        return {
            "loss": loss.detach(),
            "losses": out["losses"],
            "acc": out["acc"],
            "counts": out["counts"],
            "grad_norm": gnorm,
            "tokens": (batch["attention_mask"].sum() if "attention_mask" in batch else ids.numel()),
        }

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        draft_sd = {k: v.detach().cpu() for k, v in self.draft.state_dict().items() if "embed" not in k}
        rng = {"python": random.getstate(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "step": self.step_num,
            "draft": draft_sd,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng,
        }

    def load_state_dict(self, st: dict) -> None:
        missing, unexpected = self.draft.load_state_dict(st["draft"], strict=False)
        missing = [m for m in missing if "embed" not in m]
        if missing or unexpected:
            raise ValueError(f"training state does not match the draft (missing={missing}, unexpected={unexpected})")
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.step_num = int(st["step"])
        rng = st.get("rng") or {}
        if "python" in rng:
            random.setstate(rng["python"])
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            try:
                torch.cuda.set_rng_state_all(rng["cuda"])
            except Exception:  # different GPU count: not fatal (no randomness in the step)
                pass


def _state_dir(out_dir: Path) -> Path:
    return out_dir / STATE_DIR


def latest_state(out_dir: str | Path) -> Path | None:
    p = _state_dir(Path(out_dir)) / "latest.json"
    if not p.exists():
        return None
    name = json.loads(p.read_text())["file"]
    f = _state_dir(Path(out_dir)) / name
    return f if f.exists() else None


def _save_state(out_dir: Path, trainer: Eagle3Trainer, extra: dict, keep: int) -> Path:
    from ..fileio import atomic_write

    d = _state_dir(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    name = f"step_{trainer.step_num:08d}.pt"
    with atomic_write(d / name, "wb") as f:
        torch.save({**trainer.state_dict(), **extra}, f)
    with atomic_write(d / "latest.json") as f:
        json.dump({"file": name, "step": trainer.step_num}, f)
    olds = sorted(d.glob("step_*.pt"))
    for old in olds[: max(0, len(olds) - max(1, keep))]:
        if old.name != name:
            old.unlink(missing_ok=True)
    return d / name


def train_draft(
    cfg: TrainConfig,
    *,
    device: str | torch.device = "auto",
    target_path: str | Path,
    dataset_path: str | Path,
    vocab_mapping_path: str | Path | None,
    out_dir: str | Path,
    log: Callable[[str], Any] = print,
    metrics_cb: Callable[[int, dict], Any] | None = None,
    resume: bool = True,
    manifest: dict | None = None,
    target_model: torch.nn.Module | None = None,
) -> dict:
    """Train an EAGLE3 draft online against the target and export it to ``out_dir``.

    ``out_dir`` receives config.json + model.safetensors (SGLang-loadable), manifest.json,
    metrics.json and ``training_state/`` (resumable state, metrics.jsonl). Returns the final
    metrics: step, loss, acc (per TTT step), first_loss, tokens_per_s, lr, elapsed_s, ...
    ``device``: "auto" (CUDA when visible: this process's local-rank GPU; else CPU), "cpu",
    "cuda" or "cuda:N" (`ranks.resolve_device`; TrainInputError for CUDA with none visible).
    """
    from transformers import AutoModelForCausalLM

    rank, world, local_rank = dist_info()
    out = Path(out_dir)
    device = torch.device(ranks.resolve_device(str(device), local_rank))
    dtype = resolve_dtype(cfg, device)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    def say(msg: str) -> None:
        if rank == 0:
            log(msg)

    if target_model is None:
        target_model = AutoModelForCausalLM.from_pretrained(
            str(target_path), dtype=dtype, attn_implementation=cfg.attn_implementation
        )
    target = target_model.to(device).eval()
    target.requires_grad_(False)

    if vocab_mapping_path is not None:
        d2t, t2d = load_vocab_mapping_file(vocab_mapping_path)
        if t2d.numel() != target.config.vocab_size:
            from .errors import TrainInputError

            raise TrainInputError(
                f"{vocab_mapping_path}: t2d has {t2d.numel()} entries but the target vocab is "
                f"{target.config.vocab_size}: a vocab mapping for another target (run vocab-mapping "
                "with this target's --target-vocab-size)"
            )
    else:
        d2t = t2d = None
    draft = build_draft(
        target,
        d2t=d2t,
        t2d=t2d,
        aux_layers=cfg.aux_layer_ids,
        seed=cfg.draft_init_seed if cfg.draft_init_seed is not None else cfg.seed,
    ).to(device)

    rows = load_tokenized(dataset_path, cfg.max_length, vocab_size=target.config.vocab_size)
    say(
        f"dataset {dataset_path}: {len(rows)} rows, {rows.num_tokens} tokens "
        f"(skipped {rows.skipped_no_supervision} without supervised tokens, {rows.skipped_unreadable} unreadable "
        f"{rows.unreadable_examples[:2]}, truncated {rows.truncated})"
    )
    ds = TokenizedDataset(rows)
    sampler = torch.utils.data.DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    pad_id = target.config.pad_token_id if target.config.pad_token_id is not None else 0
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=cfg.batch_size,
        sampler=sampler,
        collate_fn=lambda b: collate(b, pad_id=pad_id, multiple_of=64 if device.type == "cuda" else 1),
    )
    steps_per_epoch = len(loader)
    total = cfg.max_steps if cfg.max_steps else cfg.epochs * steps_per_epoch
    n_epochs = math.ceil(total / steps_per_epoch)

    trainer = Eagle3Trainer(cfg, target, draft, device, total)
    start_epoch, skip_batches = 0, 0
    history: list[dict] = []
    first_loss = None
    if resume and (st_path := latest_state(out)) is not None:
        st = torch.load(st_path, map_location="cpu", weights_only=False)
        if st.get("total_steps") not in (None, total):
            raise ValueError(
                f"{st_path}: saved for {st.get('total_steps')} total steps, this run has {total}; "
                "use a fresh out_dir or resume=False"
            )
        trainer.load_state_dict(st)
        start_epoch, skip_batches = int(st["epoch"]), int(st["batch_in_epoch"])
        history = list(st.get("history", []))
        first_loss = st.get("first_loss")
        say(f"resumed from {st_path} at step {trainer.step_num}/{total}")
    say(
        f"training draft: {sum(p.numel() for p in draft.parameters() if p.requires_grad):,} trainable params, "
        f"aux layers {draft.config.aux_layer_ids}, ttt {cfg.ttt_length}, {total} steps, world {world}, device {device}, {dtype}"
    )

    t_start = time.perf_counter()
    start_step = trainer.step_num  # steps done before this run (resume) do not count towards the step time
    win = {"t": time.perf_counter(), "vec": None}
    compile_note_logged = False
    last: dict = history[-1] if history else {}
    epoch = start_epoch
    done = trainer.step_num >= total
    while not done and epoch < n_epochs:
        sampler.set_epoch(epoch)
        for b_idx, batch in enumerate(loader):
            if b_idx < skip_batches:
                continue
            res = trainer.train_step(batch)
            step = trainer.step_num
            # accumulate on the device; the host syncs only on log/save steps (and the first step)
            if first_loss is None:
                first_loss = float(res["loss"])
            k = cfg.ttt_length
            vec = torch.zeros(3 + 3 * k, dtype=torch.float64, device=device)
            n_s = res["counts"].numel()
            vec[0] = res["loss"].double()
            vec[1] = 1.0
            vec[2] = float(res["tokens"])
            vec[3 : 3 + n_s] = (res["acc"] * res["counts"]).double()
            vec[3 + k : 3 + k + n_s] = res["counts"].double()
            vec[3 + 2 * k : 3 + 2 * k + n_s] = res["losses"].double()
            win["vec"] = vec if win["vec"] is None else win["vec"] + vec
            is_last = step >= total or b_idx == steps_per_epoch - 1 and epoch == n_epochs - 1
            if (
                (cfg.log_every and step % cfg.log_every == 0)
                or is_last
                or (cfg.save_every and step % cfg.save_every == 0)
            ):
                red_t = win["vec"]
                if world > 1:
                    dist.all_reduce(red_t)
                red = red_t.tolist()
                dt = time.perf_counter() - win["t"]
                n = max(1.0, red[1])
                last = {
                    "step": step,
                    "epoch": epoch,
                    "loss": red[0] / n,
                    "acc": [red[3 + i] / max(1.0, red[3 + k + i]) for i in range(k)],
                    "step_losses": [red[3 + 2 * k + i] / n for i in range(k)],
                    "tokens_per_s": red[2] / max(dt, 1e-9),
                    "lr": trainer.scheduler.get_last_lr()[0],
                    "grad_norm": float(res["grad_norm"]) if res["grad_norm"] is not None else None,
                    "skipped_steps": trainer.skipped_steps,
                }
                if trainer.compile_disabled and not compile_note_logged:
                    say(f"torch.compile switched off: {trainer.compile_disabled}; continuing eagerly")
                    compile_note_logged = True
                history.append(last)
                win = {"t": time.perf_counter(), "vec": None}
                elapsed = time.perf_counter() - t_start
                eta = eta_seconds(elapsed, step - start_step, total - step)
                last["elapsed_s"], last["eta_s"] = round(elapsed, 3), (round(eta, 3) if eta is not None else None)
                say(
                    progress_line(
                        step, total, last["loss"], last["acc"], last["lr"], last["tokens_per_s"], elapsed, eta
                    )
                )
                if rank == 0:
                    _state_dir(out).mkdir(parents=True, exist_ok=True)
                    with open(_state_dir(out) / "metrics.jsonl", "a", encoding="utf-8") as f:
                        f.write(json.dumps(last) + "\n")
            if (cfg.save_every and step % cfg.save_every == 0) or is_last:
                next_epoch, next_b = (epoch, b_idx + 1) if b_idx + 1 < steps_per_epoch else (epoch + 1, 0)
                if rank == 0:
                    _save_state(
                        out,
                        trainer,
                        {
                            "epoch": next_epoch,
                            "batch_in_epoch": next_b,
                            "total_steps": total,
                            "history": history,
                            "first_loss": first_loss,
                            "config": asdict(cfg),
                        },
                        cfg.keep_checkpoints,
                    )
                if world > 1:
                    dist.barrier()
            if rank == 0 and metrics_cb is not None and history and history[-1]["step"] == step:
                metrics_cb(step, dict(history[-1]))
            if step >= total:
                done = True
                break
        skip_batches = 0
        epoch += 1

    final = {
        **{k: v for k, v in last.items() if k != "eta_s"},
        "first_loss": first_loss,
        "total_steps": total,
        "elapsed_s": time.perf_counter() - t_start,
        "num_rows": len(rows),
        "num_tokens": rows.num_tokens,
        "world_size": world,
        "skipped_rows": rows.skipped_no_supervision,
        "truncated_rows": rows.truncated,
        "aux_layer_ids": list(draft.config.aux_layer_ids),
        "draft_vocab_size": draft.config.draft_vocab_size,
        "skipped_steps": trainer.skipped_steps,
        "compile_disabled": trainer.compile_disabled,
    }
    if rank == 0:
        from ..fileio import atomic_write

        save_draft_checkpoint(
            draft,
            out,
            target.config,
            extra_manifest={**(manifest or {}), "train_config": asdict(cfg), "metrics": final},
        )
        with atomic_write(out / "metrics.json") as f:
            json.dump({"final": final, "history": history}, f, indent=2, default=str)
        say(f"saved draft to {out}")
    if world > 1:
        dist.barrier()
    return final
