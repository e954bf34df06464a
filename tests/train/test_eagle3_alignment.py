"""Alignment of draft inputs, target distributions and the loss mask (SpecForge #885 fixed).

Notation (loss.py): tokens x_t, loss_mask m_t, target logits l_t predict x_{t+1}. Step i at
anchor p reads x_{p+1+i}, predicts x_{p+2+i} against l_{p+1+i}, and is supervised iff
m_{p+1} .. m_{p+2+i} are all 1.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from specforge_assets.train.eagle3 import TTTCache, build_draft
from specforge_assets.train.loss import eagle3_ttt_loss, shift_left, ttt_loss_masks
from tests.helpers.toy import build_toy_target

S, E, T = 5, 11, 16  # assistant span x_5..x_11 in a 16-token row


def span_mask() -> torch.Tensor:
    m = torch.zeros(1, T, dtype=torch.long)
    m[0, S : E + 1] = 1
    return m


def test_masks_fixed_vs_specforge():
    m = span_mask()
    fixed = ttt_loss_masks(m, 3, fix_alignment=True)[:, 0]
    legacy = ttt_loss_masks(m, 3, fix_alignment=False)[:, 0]
    # step 0: anchors whose token x_{p+1} and prediction x_{p+2} are both assistant tokens
    assert fixed[0].nonzero().flatten().tolist() == list(range(S - 1, E - 1))  # 4..9
    assert fixed[1].nonzero().flatten().tolist() == list(range(S - 1, E - 2))
    assert fixed[2].nonzero().flatten().tolist() == list(range(S - 1, E - 3))
    # SpecForge: unshifted mask -> first draftable anchor (p = S-1) unsupervised, stale p = E-1, E supervised
    assert legacy[0].nonzero().flatten().tolist() == list(range(S, E + 1))
    assert fixed[0, S - 1] == 1 and legacy[0, S - 1] == 0
    assert fixed[0, E] == 0 and legacy[0, E] == 1
    assert legacy[1].nonzero().flatten().tolist() == list(range(S - 1, E))


def test_shift_left():
    x = torch.arange(6).view(1, 6)
    assert shift_left(x, 2).tolist() == [[2, 3, 4, 5, 0, 0]]
    assert shift_left(x, 0).tolist() == x.tolist()


@pytest.fixture(scope="module")
def target():
    return build_toy_target(pretrain_steps=0, seed=4)


def _scenario():
    """Ids, mask and target logits where the target agrees with the data only on the assistant
    span (it generated those tokens) and disagrees elsewhere."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(8, 60, (1, T), generator=g)
    m = span_mask()
    logits = torch.full((1, T, 64), -10.0)
    for t in range(T - 1):
        nxt = int(ids[0, t + 1])
        tok = nxt if S <= t + 1 <= E else (nxt + 1) % 64  # outside the span: not the data token
        logits[0, t, tok] = 10.0
    logits[0, T - 1, 0] = 10.0
    return ids, m, logits


def _oracle(draft, ids):
    """A draft that always predicts the data: at unrolled step i, anchor p -> x_{p+2+i}."""
    state = {"step": 0}

    def step(input_ids, hidden, pos, cache):
        state["step"] += 1
        return hidden

    def compute_logits(hidden):
        s = state["step"]  # == i + 1
        n = hidden.shape[1]
        nxt = shift_left(ids, s + 1)[:, :n]
        return F.one_hot(nxt, 64).float() * 10.0 + hidden.sum() * 0.0

    draft.step = step
    draft.compute_logits = compute_logits
    return draft


def test_oracle_draft_is_perfect_only_with_correct_alignment(target):
    ids, m, logits = _scenario()
    H = target.config.hidden_size
    aux = torch.randn(1, T, 3 * H)

    out = eagle3_ttt_loss(_oracle(build_draft(target), ids), ids, aux, logits, m, ttt_length=4, fix_alignment=True)
    assert out["counts"].tolist() == [6.0, 5.0, 4.0, 3.0]
    assert out["acc"].tolist() == [1.0, 1.0, 1.0, 1.0]

    # SpecForge's unshifted mask supervises positions past the span, where the target disagrees
    legacy = eagle3_ttt_loss(_oracle(build_draft(target), ids), ids, aux, logits, m, ttt_length=4, fix_alignment=False)
    assert legacy["acc"][0] < 1.0

    # an off-by-one between inputs and targets is caught (target logits one position late/early)
    for shift in (1, -1):
        bad = eagle3_ttt_loss(
            _oracle(build_draft(target), ids),
            ids,
            aux,
            torch.roll(logits, shift, dims=1),
            m,
            ttt_length=4,
            fix_alignment=True,
        )
        assert bad["acc"][0] < 0.5


def test_step0_loss_equals_manual_soft_ce(target):
    torch.manual_seed(0)
    ids, m, _ = _scenario()
    logits = torch.randn(1, T, 64) * 3
    H = target.config.hidden_size
    aux = torch.randn(1, T, 3 * H)
    draft = build_draft(target, seed=1)
    out = eagle3_ttt_loss(draft, ids, aux, logits, m, ttt_length=1, fix_alignment=True)
    with torch.no_grad():
        h = draft.step(shift_left(ids, 1), draft.project(aux), torch.arange(T), TTTCache())
        logp = F.log_softmax(draft.compute_logits(h).float(), -1)
    total, n = 0.0, 0
    for p in range(S - 1, E - 1):  # supervised anchors
        tp = torch.softmax(logits[0, p + 1], -1)  # target distribution l_{p+1}
        total += float(-(tp * logp[0, p]).sum())
        n += 1
    assert out["losses"][0].item() == pytest.approx(total / n, rel=1e-5)
    # the same sum against l_p (off by one) is a different number
    wrong = sum(float(-(torch.softmax(logits[0, p], -1) * logp[0, p]).sum()) for p in range(S - 1, E - 1)) / n
    assert abs(wrong - total / n) > 1e-3


def test_positions_outside_draft_vocab_are_masked(target):
    ids, m, logits = _scenario()
    # draft vocab: everything but the target's argmax at anchor S-1 (predicts x_{S+1})
    excluded = int(logits[0, S].argmax())
    used = torch.tensor([t for t in range(64) if t != excluded][:40])
    d2t = used - torch.arange(40)
    t2d = torch.zeros(64, dtype=torch.bool)
    t2d[used] = True
    draft = build_draft(target, d2t=d2t, t2d=t2d)
    out = eagle3_ttt_loss(draft, ids, torch.randn(1, T, 3 * target.config.hidden_size), logits, m, ttt_length=1)
    in_vocab = sum(int(t2d[int(logits[0, p + 1].argmax())]) for p in range(S - 1, E - 1))
    assert out["counts"][0].item() == in_vocab < 6
