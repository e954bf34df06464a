"""EAGLE3 TTT loss: alignment of inputs / targets / masks, soft cross-entropy over the draft vocab.

Notation: tokens x_0..x_{T-1}; ``loss_mask[t] = 1`` when token x_t is a supervised (assistant)
token; the target's aux features a_t and logits l_t (l_t predicts x_{t+1}) come from one target
forward over the sequence.

Unrolled step i (0-based) at anchor position p (SpecForge's alignment):
  input token  ``x_{p+1+i}``         (ids shifted left by i+1)
  hidden       ``fc(a_p)`` at i=0, else the draft's step-(i-1) output at p
  target       ``softmax(l_{p+1+i}[draft vocab])`` (predicts x_{p+2+i})

Mask. SpecForge does not shift ``loss_mask`` with the inputs (issue #885): step i uses
``loss_mask[p+i]``, which leaves the first draftable assistant position unsupervised and
supervises a position past the span's end. With ``fix_alignment=True`` (default) a position is
supervised iff the draft would really be asked for that token when serving: the anchor token
x_{p+1} (produced by the target) and every token up to the predicted x_{p+2+i} lie in the
loss mask, i.e. ``mask_i[p] = prod_{j=1..i+2} loss_mask[p+j]`` (zero past the end).
``fix_alignment=False`` reproduces SpecForge (``loss_mask[p+i]``) for parity runs.

Position mask (SpecForge): positions whose target argmax is not in the draft vocab are dropped
(``t2d[argmax l]``). The loss of a step is the soft cross-entropy averaged over its supervised
positions; steps are weighted 0.8^i and summed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .eagle3 import LlamaForCausalLMEagle3, TTTCache
from .settings import TrainConfig

_TRAIN = TrainConfig()  # the defaults below are configs/train.yaml `training:`'s


def shift_left(x: torch.Tensor, n: int, fill: int | float = 0) -> torch.Tensor:
    """x[..., p] <- x[..., p+n] along dim 1, `fill` past the end."""
    if n == 0:
        return x
    out = torch.full_like(x, fill)
    if n < x.shape[1]:
        out[:, : x.shape[1] - n] = x[:, n:]
    return out


def ttt_loss_masks(loss_mask: torch.Tensor, ttt_length: int, fix_alignment: bool = True) -> torch.Tensor:
    """[ttt_length, B, T] 0/1 masks of supervised anchor positions per unrolled step."""
    m = (loss_mask > 0).to(torch.float32)
    masks = []
    if fix_alignment:
        run = shift_left(m, 1)  # anchor token x_{p+1} in the mask
        for i in range(ttt_length):
            run = run * shift_left(m, i + 2)  # ... and every token up to x_{p+2+i}
            masks.append(run)
    else:
        for i in range(ttt_length):
            masks.append(shift_left(m, i))
    return torch.stack(masks)


def target_distribution(
    target_logits: torch.Tensor, draft: LlamaForCausalLMEagle3
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(target_p over the draft vocab [B,T,Vd] fp32, target argmax as draft id [B,T],
    in_draft [B,T] bool: the target argmax is in the draft vocab)."""
    with torch.no_grad():
        argmax = target_logits.argmax(-1)
        in_draft = draft.t2d[argmax]
        if draft.config.draft_vocab_size == draft.config.vocab_size:
            head = target_logits
        else:
            head = target_logits.index_select(-1, draft.draft_to_target_ids())
        target_p = torch.softmax(head.float(), dim=-1)
        # draft id of the target argmax (valid where in_draft): ids are sorted ascending.
        arg_d = torch.searchsorted(draft.draft_to_target_ids(), argmax.contiguous())
        arg_d = arg_d.clamp(max=draft.config.draft_vocab_size - 1)
    return target_p, arg_d, in_draft


def eagle3_ttt_loss(
    draft: LlamaForCausalLMEagle3,
    input_ids: torch.Tensor,
    aux_hidden: torch.Tensor,
    target_logits: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    ttt_length: int = _TRAIN.ttt_length,
    fix_alignment: bool = True,
    step_weight: float = _TRAIN.step_weight,
) -> dict:
    """Unrolled EAGLE3 training loss for one batch.

    Returns ``loss`` (weighted sum, differentiable) and per-step ``losses``/``acc``/``counts``
    (supervised positions) as 1-D detached tensors. Wrap it in :class:`TTTLossModule` to train
    under DDP (one forward call per batch).
    """
    B, T = input_ids.shape
    target_p, arg_d, in_draft = target_distribution(target_logits, draft)
    masks = ttt_loss_masks(loss_mask, ttt_length, fix_alignment).to(input_ids.device)
    module = draft
    pos = torch.arange(T, device=input_ids.device)
    hidden = module.project(aux_hidden if torch.is_autocast_enabled() else aux_hidden.to(module.fc.weight.dtype))
    cache = TTTCache()
    total = 0.0
    losses, accs, counts = [], [], []
    for i in range(ttt_length):
        s = i + 1  # ids and targets shifted left by s
        ids_i = shift_left(input_ids, s)
        hidden = module.step(ids_i, hidden, pos, cache)
        n = T - s
        if n <= 0:
            break
        logits = module.compute_logits(hidden[:, :n]).float()
        pm = masks[i][:, :n] * in_draft[:, s:].float()
        logp = F.log_softmax(logits, dim=-1)
        ce = -(target_p[:, s:] * logp).sum(-1)  # [B, n]
        cnt = pm.sum()
        loss_i = (ce * pm).sum() / cnt.clamp(min=1.0)
        total = total + (step_weight**i) * loss_i
        with torch.no_grad():
            correct = ((logits.argmax(-1) == arg_d[:, s:]).float() * pm).sum()
        losses.append(loss_i.detach())
        accs.append(correct / cnt.clamp(min=1.0))
        counts.append(cnt.detach())
    if not torch.is_tensor(total):
        total = hidden.sum() * 0.0
    # per-step values stay on the device (no host sync inside the step); .tolist() them to log.
    return {"loss": total, "losses": torch.stack(losses), "acc": torch.stack(accs), "counts": torch.stack(counts)}


class TTTLossModule(torch.nn.Module):
    """The draft plus its TTT loss as one module, so DDP sees one forward per batch."""

    def __init__(
        self,
        draft: LlamaForCausalLMEagle3,
        *,
        ttt_length: int = _TRAIN.ttt_length,
        fix_alignment: bool = True,
        step_weight: float = _TRAIN.step_weight,
    ):
        super().__init__()
        self.draft = draft
        self.ttt_length, self.fix_alignment, self.step_weight = ttt_length, fix_alignment, step_weight

    def forward(self, input_ids, aux_hidden, target_logits, loss_mask):
        out = eagle3_ttt_loss(
            self.draft,
            input_ids,
            aux_hidden,
            target_logits,
            loss_mask,
            ttt_length=self.ttt_length,
            fix_alignment=self.fix_alignment,
            step_weight=self.step_weight,
        )
        return out["loss"], out
