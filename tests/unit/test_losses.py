"""Preference losses: hand-worked numbers, exact reductions to plain DPO, TRL's own sigmoid path, stable gradients.

Hand examples pick log-ratios whose sigmoid is a simple fraction, so each expected value is a closed form:
    -logsigmoid(0)      = ln 2
    -logsigmoid(ln 3)   = -ln(3/4) = ln(4/3)
    -logsigmoid(-ln 3)  = -ln(1/4) = ln 4
Inputs are float64 so offsets such as -512 + ln 3 keep their digits; every comparison is to 1e-6.
"""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from align.losses import (
    DPOLoss,
    dpo_loss,
    forward_kl,
    halva_alignment_loss,
    hsa_dpo_loss,
    mdpo_loss,
    phrase_logps,
    povid_loss,
    stic_loss,
    weighted_logps,
)

LN2, LN3 = math.log(2.0), math.log(3.0)
TOL = dict(atol=1e-6, rtol=0.0)


def t(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def close(actual: torch.Tensor, expected) -> None:
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    torch.testing.assert_close(actual, expected, **TOL)


def random_logps(seed: int, batch: int = 5) -> list[torch.Tensor]:
    """Four [B] summed log-probs (pc, pr, rc, rr) of realistic size: -200..-20, margins of a few nats."""
    g = torch.Generator().manual_seed(seed)
    return [-20.0 - 180.0 * torch.rand(batch, generator=g, dtype=torch.float64) for _ in range(4)]


# ---------------------------------------------------------------------------------------------------- dpo_loss


def test_dpo_loss_hand_worked():
    """beta = 0.5; three examples whose beta * margin is ln 3, 0 and -ln 3.

    ex 0: pc - rc = (-4 + ln3) - (-4) = ln3, pr - rr = (-7 - ln3) - (-7) = -ln3, margin 2 ln3, beta*margin = ln3
          loss = -logsig(ln3) = ln(4/3) = 0.287682; rewards 0.5 ln3 = 0.549306 and -0.5 ln3
    ex 1: every log-prob -3 -> margin 0 -> loss ln2 = 0.693147, rewards 0 and 0
    ex 2: ex 0 with chosen and rejected log-ratios swapped: beta*margin = -ln3 -> loss ln4 = 1.386294
    """
    pc, rc = t(-4 + LN3, -3, -4 - LN3), t(-4, -3, -4)
    pr, rr = t(-7 - LN3, -3, -7 + LN3), t(-7, -3, -7)
    out = dpo_loss(pc, pr, rc, rr, beta=0.5)
    assert isinstance(out, DPOLoss) and isinstance(out, tuple)
    close(out.losses, [math.log(4 / 3), LN2, math.log(4.0)])
    close(out.chosen_rewards, [0.5 * LN3, 0.0, -0.5 * LN3])
    close(out.rejected_rewards, [-0.5 * LN3, 0.0, 0.5 * LN3])


def test_dpo_loss_logged_terms_are_detached():
    """Only the loss carries a gradient; the rewards are for logging."""
    pc, pr, rc, rr = random_logps(0)
    pc.requires_grad_(True)
    losses, chosen_rewards, rejected_rewards = dpo_loss(pc, pr, rc, rr, beta=0.1)
    assert losses.requires_grad
    assert not chosen_rewards.requires_grad and not rejected_rewards.requires_grad


def _trl_sigmoid_loss_through_compute_loss(pc, pr, rc, rr, beta):
    """TRL 1.16's own `DPOTrainer._compute_loss` on a stub trainer whose model returns the given log-probs.

    TRL 1.16 has no standalone DPO loss function (`dpo_loss` was removed; the 15 loss types live inside
    `_compute_loss`), so this drives that method with the fewest attributes it reads: a fused-head model output
    whose `log_probs` rows sum to pc/pr (TRL sums them over the sequence), precomputed reference log-probs, and an
    accelerator whose gathers are the identity. Returns TRL's batch-mean loss and its logged reward metrics.
    """
    from trl import DPOTrainer

    batch, seq = pc.shape[0], 4
    # [2B, T-1] per-token log-probs, chosen rows first: each row's summed log-prob sits on its first token and the
    # rest are 0, so TRL's sum over the sequence gives back pc/pr exactly (no float32 rounding in the check).
    per_token = torch.zeros(2 * batch, seq - 1, dtype=pc.dtype)
    per_token[:, 0] = torch.cat([pc, pr])

    class FusedHeadModel(torch.nn.Module):
        def forward(self, **kwargs):
            rows = kwargs["input_ids"].shape[0]
            return SimpleNamespace(
                log_probs=per_token.clone().requires_grad_(True),
                entropy=torch.zeros(rows, seq - 1),
                mean_logits=torch.zeros(rows, seq - 1),
                is_top1=torch.zeros(rows, seq - 1, dtype=torch.bool),
            )

    model = FusedHeadModel().train()
    trainer = DPOTrainer.__new__(DPOTrainer)  # skip __init__: it needs a real model, tokenizer and dataset
    trainer.__dict__.update(
        model=model,
        accelerator=SimpleNamespace(
            device=torch.device("cpu"), gather_for_metrics=lambda x: x, gather=lambda x: x
        ),
        beta=beta,
        precompute_ref_logps=True,
        loss_types=["sigmoid"],
        loss_weights=[1.0],
        ld_alpha=None,
        f_divergence_type="reverse_kl",
        use_weighting=False,
        aux_loss_enabled=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    ones = torch.ones(2 * batch, seq, dtype=torch.long)
    inputs = {
        "input_ids": ones,
        "attention_mask": ones,
        "completion_mask": torch.cat([torch.zeros(2 * batch, 1, dtype=torch.long), ones[:, 1:]], dim=1),
        "ref_chosen_logps": rc,
        "ref_rejected_logps": rr,
    }
    loss = trainer._compute_loss(model, inputs, return_outputs=False)
    return loss, trainer._metrics["train"]


def test_dpo_loss_equals_trl_sigmoid_code_path():
    """Our per-example losses, averaged, equal the loss TRL 1.16's `_compute_loss` returns for loss_type="sigmoid",
    and our rewards average to TRL's logged rewards/chosen and rewards/rejected; beta means the same in both.
    """
    pc, pr, rc, rr = (x.float() for x in random_logps(1, batch=6))
    for beta in (0.1, 0.5):
        trl_loss, metrics = _trl_sigmoid_loss_through_compute_loss(pc, pr, rc, rr, beta)
        ours = dpo_loss(pc, pr, rc, rr, beta)
        torch.testing.assert_close(ours.losses.mean(), trl_loss.detach(), atol=1e-6, rtol=0.0)
        assert metrics["rewards/chosen"][0] == pytest.approx(ours.chosen_rewards.mean().item(), abs=1e-6)
        assert metrics["rewards/rejected"][0] == pytest.approx(ours.rejected_rewards.mean().item(), abs=1e-6)


def test_dpo_loss_equals_trl_sigmoid_formula():
    """TRL 1.16 "sigmoid" with reverse_kl, reproduced from its source: delta_score = (pc - rc) - (pr - rr),
    per_sequence_loss = -F.logsigmoid(self.beta * delta_score); no label smoothing in this branch.
    """
    pc, pr, rc, rr = random_logps(2)
    chosen_logratios, rejected_logratios = pc - rc, pr - rr
    expected = -F.logsigmoid(0.1 * (chosen_logratios - rejected_logratios))
    close(dpo_loss(pc, pr, rc, rr, 0.1).losses, expected)


# ------------------------------------------------------------------------------------------ weighted_logps / DDPO


def test_weighted_logps_hand_worked_sum_and_average():
    """Row 0: logps [-1, -2, -3, -4], mask [1, 1, 1, 0], weights [1, 3, 1, 3] (gamma = 3 on token 1):
        sum     = 1*(-1) + 3*(-2) + 1*(-3) = -10       (token 3 is masked, its weight does not count)
        average = -10 / (1 + 3 + 1) = -2                (N = |y_u| + gamma*|y_c| = 2 + 3)
    Row 1: logps [-0.5, -inf, -1.5, nan], mask [1, 0, 1, 0], weights [2, 2, 1, 1]:
        sum     = 2*(-0.5) + 1*(-1.5) = -2.5            (-inf and nan sit on masked tokens and vanish)
        average = -2.5 / 3 = -0.833333
    Row 2: nothing masked in -> 0 for both (not 0/0).
    """
    logps = t([-1, -2, -3, -4], [-0.5, -math.inf, -1.5, math.nan], [-1, -1, -1, -1])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    weights = t([1, 3, 1, 3], [2, 2, 1, 1], [1, 1, 1, 1])
    close(weighted_logps(logps, mask, weights), [-10.0, -2.5, 0.0])
    close(weighted_logps(logps, mask.bool(), weights, average=True), [-2.0, -2.5 / 3, 0.0])


def test_weighted_logps_gradient_is_weight_over_norm_on_kept_tokens_only():
    """d(average)/d logp_t = w_t / N on kept tokens and exactly 0 elsewhere, even under -inf/nan padding:
    row 0 -> [1, 3, 1, 0] / 5 = [0.2, 0.6, 0.2, 0]; row 1 -> [2, 0, 1, 0] / 3; row 2 (nothing kept) -> 0.
    """
    logps = t([-1, -2, -3, -4], [-0.5, -math.inf, -1.5, math.nan], [-1, -1, -1, -1]).requires_grad_(True)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    weights = t([1, 3, 1, 3], [2, 2, 1, 1], [1, 1, 1, 1])
    weighted_logps(logps, mask, weights, average=True).sum().backward()
    close(logps.grad, t([0.2, 0.6, 0.2, 0.0], [2 / 3, 0.0, 1 / 3, 0.0], [0.0, 0.0, 0.0, 0.0]))


def test_ddpo_hand_worked_gamma_doubles_the_margin():
    """Two response tokens, the second one a changed segment with gamma = 2, beta = ln3 / 2.

    chosen:   policy [-1, -0.5], ref [-1, -1]   -> lp_w 1*(-1) + 2*(-0.5) = -2 vs -3: log-ratio +1
    rejected: policy [-1, -2],   ref [-1, -1.5] -> lp_w -5 vs -4:                   log-ratio -1
    margin 2, beta*margin = ln3 -> loss ln(4/3). Without the weight (gamma = 1) the margin would be 1.
    """
    w = t([1, 2])
    mask = torch.ones(1, 2, dtype=torch.bool)
    lp = lambda *v: weighted_logps(t(list(v)), mask, w)  # noqa: E731
    out = dpo_loss(lp(-1, -0.5), lp(-1, -2), lp(-1, -1), lp(-1, -1.5), beta=LN3 / 2)
    close(out.losses, [math.log(4 / 3)])


def test_ddpo_with_unit_weights_is_summed_logps_and_plain_dpo():
    """weights all 1 and average=False give exactly the masked sum, so the DDPO loss is dpo_loss on summed logps."""
    g = torch.Generator().manual_seed(3)
    per_token = [-3 * torch.rand(4, 7, generator=g, dtype=torch.float64) for _ in range(4)]
    mask = torch.rand(4, 7, generator=g) > 0.3
    ones = torch.ones(4, 7, dtype=torch.float64)
    summed = [(x * mask).sum(-1) for x in per_token]
    weighted = [weighted_logps(x, mask, ones) for x in per_token]
    for a, b in zip(weighted, summed, strict=True):
        torch.testing.assert_close(a, b, atol=0.0, rtol=0.0)
    close(dpo_loss(*weighted, beta=0.1).losses, dpo_loss(*summed, beta=0.1).losses)


# -------------------------------------------------------------------------------------------------------- mDPO


def test_mdpo_hand_worked():
    """beta = 1; chosen log-ratio pc - rc = ln3, rejected pr - rr = ln3, corrupted-image pcc - rcc = 2 ln3.

    dpo         = -logsig(ln3 - ln3)           = ln2            = 0.693147
    conditional = -logsig(ln3 - 2 ln3)         = -logsig(-ln3)  = ln4   = 1.386294
    anchor      = -logsig(ln3 - 0)             = ln(4/3)        = 0.287682
    loss (1, 1, 1) = ln2 + ln4 + ln(4/3) = ln(32/3) = 2.367124
    With anchor = ln3 the anchor term is -logsig(0) = ln2; with weights (2, 0.5, 1) and anchor 0 the loss is
    2 ln2 + 0.5 ln4 + ln(4/3) = ln(32/3) again (2 ln2 + ln2 = ln8, times 4/3).
    Rewards: chosen ln3, rejected ln3, corrupted chosen 2 ln3 (beta = 1).
    """
    rc, rr, rcc = t(-10), t(-20), t(-15)
    pc, pr, pcc = rc + LN3, rr + LN3, rcc + 2 * LN3
    out = mdpo_loss(pc, pr, pcc, rc, rr, rcc, beta=1.0)
    close(out.dpo_losses, [LN2])
    close(out.conditional_losses, [math.log(4.0)])
    close(out.anchor_losses, [math.log(4 / 3)])
    close(out.losses, [math.log(32 / 3)])
    close(out.chosen_rewards, [LN3])
    close(out.rejected_rewards, [LN3])
    close(out.corrupted_chosen_rewards, [2 * LN3])
    close(mdpo_loss(pc, pr, pcc, rc, rr, rcc, beta=1.0, anchor=LN3).anchor_losses, [LN2])
    reweighted = mdpo_loss(pc, pr, pcc, rc, rr, rcc, 1.0, dpo_weight=2.0, conditional_weight=0.5)
    close(reweighted.losses, [math.log(32 / 3)])
    assert all(not x.requires_grad for x in out[1:])


def test_mdpo_with_only_the_dpo_term_is_dpo():
    """(dpo_weight, conditional_weight, anchor_weight) = (1, 0, 0) leaves plain sigmoid DPO."""
    pc, pr, rc, rr = random_logps(4)
    pcc, rcc = random_logps(5)[:2]
    out = mdpo_loss(pc, pr, pcc, rc, rr, rcc, 0.1, dpo_weight=1.0, conditional_weight=0.0, anchor_weight=0.0)
    close(out.losses, dpo_loss(pc, pr, rc, rr, 0.1).losses)


def test_mdpo_matches_mdpo_code_grouping():
    """mDPO's trainer writes the conditional margin as (pc - pcc) - (rc - rcc) and sums three logsigmoids with no
    anchor; ours groups it as (pc - rc) - (pcc - rcc). Same number on random inputs, default weights."""
    pc, pr, rc, rr = random_logps(6)
    pcc, rcc = random_logps(7)[:2]
    beta = 0.1
    logits = (pc - pr) - (rc - rr)
    image_conditional_logits = (pc - pcc) - (rc - rcc)
    anchor_logits = pc - rc
    expected = (
        -F.logsigmoid(beta * logits)
        - F.logsigmoid(beta * image_conditional_logits)
        - F.logsigmoid(beta * anchor_logits)
    )
    close(mdpo_loss(pc, pr, pcc, rc, rr, rcc, beta).losses, expected)


# ----------------------------------------------------------------------------------------------------- HSA-DPO


def test_hsa_dpo_hand_worked():
    """beta = 1; margin = w_c * (pc - rc) - w_r * (pr - rr).

    ex 0: w_r = 2, w_c = 1, chosen log-ratio 0, rejected -ln3/2 -> margin 0 + 2*ln3/2 = ln3 -> loss ln(4/3)
          (unweighted DPO would give -logsig(ln3/2) = 0.450... ; the severity doubles the push)
    ex 1: w_r = 1, w_c = 3, chosen log-ratio -ln3/3, rejected 0 -> margin -ln3 -> loss ln4
    Rewards stay unweighted: chosen [0, -ln3/3], rejected [-ln3/2, 0].
    """
    rc, rr = t(-10, -10), t(-20, -20)
    pc, pr = rc + t(0, -LN3 / 3), rr + t(-LN3 / 2, 0)
    out = hsa_dpo_loss(pc, pr, rc, rr, 1.0, rejected_score=t(2, 1), chosen_score=t(1, 3))
    close(out.losses, [math.log(4 / 3), math.log(4.0)])
    close(out.chosen_rewards, [0.0, -LN3 / 3])
    close(out.rejected_rewards, [-LN3 / 2, 0.0])
    # chosen_score=None means w_c = 1: example 0 is unchanged.
    close(hsa_dpo_loss(pc[:1], pr[:1], rc[:1], rr[:1], 1.0, rejected_score=t(2)).losses, [math.log(4 / 3)])


def test_hsa_dpo_with_unit_scores_is_dpo():
    pc, pr, rc, rr = random_logps(8)
    ones = torch.ones(5, dtype=torch.float64)
    expected = dpo_loss(pc, pr, rc, rr, 0.1).losses
    close(hsa_dpo_loss(pc, pr, rc, rr, 0.1, rejected_score=ones).losses, expected)
    close(hsa_dpo_loss(pc, pr, rc, rr, 0.1, rejected_score=1.0, chosen_score=ones).losses, expected)


# -------------------------------------------------------------------------------------------------------- STIC


def test_stic_hand_worked():
    """beta = 1, sft_coef = 1/1024.

    ex 0: all log-ratios 0 -> DPO ln2; chosen logp -2048 -> sft term -(1/1024)(-2048) = 2 -> loss ln2 + 2
    ex 1: chosen log-ratio ln3, rejected 0 -> DPO ln(4/3); chosen logp -512 + ln3 -> sft 0.5 - ln3/1024
          loss = ln(4/3) + 0.5 - ln3/1024 = 0.786609
    """
    rc, rr = t(-2048, -512), t(-30, -3)
    pc, pr = rc + t(0, LN3), rr
    out = stic_loss(pc, pr, rc, rr, beta=1.0)
    close(out.dpo_losses, [LN2, math.log(4 / 3)])
    close(out.sft_losses, [2.0, 0.5 - LN3 / 1024])
    close(out.losses, [LN2 + 2.0, math.log(4 / 3) + 0.5 - LN3 / 1024])


def test_stic_without_sft_term_is_dpo():
    pc, pr, rc, rr = random_logps(9)
    close(stic_loss(pc, pr, rc, rr, 0.1, sft_coef=0.0).losses, dpo_loss(pc, pr, rc, rr, 0.1).losses)


# ------------------------------------------------------------------------------------------------------- POVID


def test_povid_hand_worked():
    """beta = 1; chosen log-ratio 0, text-rejected log-ratio 0, noisy-rejected log-ratio ln3.

    text  DPO = -logsig(0 - 0)   = ln2
    noise DPO = -logsig(0 - ln3) = ln4 = 2 ln2
    loss = 0.5 ln2 + 0.5 * 2 ln2 = 1.5 ln2 = 1.039721; with weights (0.25, 1): 0.25 ln2 + 2 ln2 = 2.25 ln2
    """
    rc, rr, rnr = t(-10), t(-12), t(-14)
    pc, pr, pnr = rc, rr, rnr + LN3
    out = povid_loss(pc, pr, pnr, rc, rr, rnr, beta=1.0)
    close(out.text_losses, [LN2])
    close(out.noise_losses, [2 * LN2])
    close(out.losses, [1.5 * LN2])
    close(out.noisy_rejected_rewards, [LN3])
    close(povid_loss(pc, pr, pnr, rc, rr, rnr, 1.0, text_weight=0.25, noise_weight=1.0).losses, [2.25 * LN2])


def test_povid_stage_one_weights_are_dpo():
    pc, pr, rc, rr = random_logps(10)
    pnr, rnr = random_logps(11)[:2]
    out = povid_loss(pc, pr, pnr, rc, rr, rnr, 0.1, text_weight=1.0, noise_weight=0.0)
    close(out.losses, dpo_loss(pc, pr, rc, rr, 0.1).losses)


# -------------------------------------------------------------------------------------------------------- HALVA


def test_phrase_logps_hand_worked_order_and_exclusion():
    """Row 0: logps [-1, -2, -3, -4, -6], ids [0, 1, 1, 0, 2] -> phrase 1 = -2 - 3 = -5, phrase 2 = -6.
    Row 1: logps [-0.5, -1.5, nan, -2.5, -inf], ids [2, 2, 0, -100, 0] -> only phrase 2 = -2.0 (ids need not
    start at 1; -100 counts as "not in a phrase"; nan and -inf sit outside phrases and vanish).
    Output in (example, id) order: [-5, -6, -2]. The gradient is 1 on phrase tokens and 0 elsewhere.
    """
    logps = t([-1, -2, -3, -4, -6], [-0.5, -1.5, math.nan, -2.5, -math.inf]).requires_grad_(True)
    ids = torch.tensor([[0, 1, 1, 0, 2], [2, 2, 0, -100, 0]])
    out = phrase_logps(logps, ids)
    close(out, [-5.0, -6.0, -2.0])
    out.sum().backward()
    close(logps.grad, t([0, 1, 1, 0, 1], [1, 1, 0, 0, 0]))


def test_halva_alignment_loss_hand_worked():
    """LPh - LPc = [0, -ln3, ln3] -> log(1 + exp(.)) = [ln2, ln(4/3), ln4]."""
    correct = t(-2, -1, -5)
    hallucinated = t(-2, -1 - LN3, -5 + LN3)
    close(halva_alignment_loss(correct, hallucinated), [LN2, math.log(4 / 3), math.log(4.0)])


def test_halva_alignment_from_phrases_end_to_end():
    """Correct and hallucinated responses of 2 examples mark the same phrase ids; per-token log-probs differ only
    inside phrases. Phrases: ex 0 id 1: LPc = -1, LPh = -1 (diff 0 -> ln2); ex 0 id 2: LPc = -2, LPh = -2 - ln3
    (-> ln(4/3)); ex 1 id 1: LPc = -0.5 - 0.5, LPh = -1 + ln3 (-> ln4). Mean = (ln2 + ln(4/3) + ln4) / 3 = ln(32/3)/3.
    """
    ids = torch.tensor([[1, 0, 2, 2], [0, 1, 1, 0]])
    correct = t([-1, -9, -1, -1], [-9, -0.5, -0.5, -9])
    hallucinated = t([-1, -9, -2 - LN3, 0], [-9, -1 + LN3, 0, -9])
    losses = halva_alignment_loss(phrase_logps(correct, ids), phrase_logps(hallucinated, ids))
    close(losses, [LN2, math.log(4 / 3), math.log(4.0)])
    close(losses.mean(), math.log(32 / 3) / 3)


def test_halva_alignment_loss_rejects_unpaired_phrases():
    with pytest.raises(ValueError, match="k-th correct phrase"):
        halva_alignment_loss(t(-1, -2), t(-1))


def test_forward_kl_hand_worked_two_tokens_two_words():
    """Vocabulary of 2 words, 2 response tokens (a third, padded position holds NaN logits and is masked out).

    token 0: ref logits [0, 0] -> p = [1/2, 1/2]; policy [ln3, 0] -> q = [3/4, 1/4]
             KL = 1/2 ln((1/2)/(3/4)) + 1/2 ln((1/2)/(1/4)) = 1/2 ln(2/3) + 1/2 ln2 = 1/2 ln(4/3) = 0.143841
    token 1: ref [ln3, 0] -> p = [3/4, 1/4]; policy [0, 0] -> q = [1/2, 1/2]
             KL = 3/4 ln(3/2) + 1/4 ln(1/2) = 3/4 ln3 - ln2 = 0.130812
    example 0 (both tokens): 1/2 ln(4/3) + 3/4 ln3 - ln2 = ln2 - 1/2 ln3 + 3/4 ln3 - ln2 = 1/4 ln3 = 0.274653
    example 1 (mask [1, 0, 0]): token 0 only = 1/2 ln(4/3)
    Gradient w.r.t. the policy logits of a kept token is q - p: token 0 -> [1/4, -1/4]; masked tokens get 0.
    """
    ref = torch.tensor([[0.0, 0.0], [LN3, 0.0], [math.nan, math.nan]]).expand(2, 3, 2).contiguous()
    policy = torch.tensor([[LN3, 0.0], [0.0, 0.0], [math.nan, math.nan]]).expand(2, 3, 2).contiguous()
    policy.requires_grad_(True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    kl = forward_kl(ref, policy, mask)
    assert kl.dtype == torch.float32 and kl.shape == (2,)
    close(kl, [0.25 * LN3, 0.5 * math.log(4 / 3)])
    kl.sum().backward()
    expected_grad = torch.tensor(
        [[[0.25, -0.25], [-0.25, 0.25], [0.0, 0.0]], [[0.25, -0.25], [0.0, 0.0], [0.0, 0.0]]]
    )
    close(policy.grad, expected_grad)


def test_forward_kl_is_zero_for_equal_logits_and_handles_zero_reference_probability():
    """Equal logits -> 0 on every example (bf16 inputs too: computed in float32). A reference logit of -inf means
    p_ref = 0 for that word: it adds 0 (the limit of p log p), not NaN. ref [-inf, 0] -> p = [0, 1], policy [0, 0]
    -> q = [1/2, 1/2]: KL = 1 * ln(1 / (1/2)) = ln2.
    """
    g = torch.Generator().manual_seed(12)
    logits = 5 * torch.randn(3, 4, 11, generator=g)
    mask = torch.ones(3, 4, dtype=torch.bool)
    close(forward_kl(logits, logits.clone(), mask), [0.0, 0.0, 0.0])
    close(forward_kl(logits.bfloat16(), logits.bfloat16(), mask), [0.0, 0.0, 0.0])
    ref = torch.tensor([[[-math.inf, 0.0]]])
    policy = torch.zeros(1, 1, 2, requires_grad=True)
    kl = forward_kl(ref, policy, torch.ones(1, 1))
    close(kl, [LN2])
    kl.sum().backward()
    assert torch.isfinite(policy.grad).all()


def test_forward_kl_mean_is_halva_divergence():
    """HALVA's code: softmax both, sum p_ref (log p_ref - log p) over masked tokens and vocabulary, divide by B.
    forward_kl(...).mean() is that number (moderate logits, where HALVA's softmax-then-log is still exact)."""
    g = torch.Generator().manual_seed(13)
    ref, policy = torch.randn(3, 5, 7, generator=g), torch.randn(3, 5, 7, generator=g)
    mask = torch.rand(3, 5, generator=g) > 0.4
    p_ref, p = F.softmax(ref, -1), F.softmax(policy, -1)
    divergence = (p_ref * (p_ref.log() - p.log()) * mask.unsqueeze(-1)).sum() / ref.shape[0]
    torch.testing.assert_close(forward_kl(ref, policy, mask).mean(), divergence, atol=1e-6, rtol=0.0)


# ------------------------------------------------------------------------------------------- gradients, stability


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_every_loss_backpropagates_without_nan_at_huge_margins(sign):
    """Margins of +-1e4 nats: -logsigmoid is ~0 or ~1e4 and its gradient ~0 or ~1, never inf/NaN."""
    big = sign * 1e4
    pc = torch.tensor([big, 0.0], requires_grad=True)
    pr = torch.tensor([-big, 0.0], requires_grad=True)
    pn = torch.tensor([-big, 0.0], requires_grad=True)
    zeros = torch.zeros(2)
    losses = [
        dpo_loss(pc, pr, zeros, zeros, 1.0).losses,
        mdpo_loss(pc, pr, pn, zeros, zeros, zeros, 1.0).losses,
        hsa_dpo_loss(pc, pr, zeros, zeros, 1.0, rejected_score=torch.tensor([3.0, 0.5])).losses,
        stic_loss(pc, pr, zeros, zeros, 1.0).losses,
        povid_loss(pc, pr, pn, zeros, zeros, zeros, 1.0).losses,
        halva_alignment_loss(pc, pr),
    ]
    for loss in losses:
        assert torch.isfinite(loss).all()
    sum(loss.sum() for loss in losses).backward()
    for x in (pc, pr, pn):
        assert torch.isfinite(x.grad).all()
    # Wrong-way margin of 2e4 at beta 1: -logsigmoid(-2e4) = 2e4 + log1p(exp(-2e4)) = 2e4 in float32.
    if sign < 0:
        close(dpo_loss(pc, pr, zeros, zeros, 1.0).losses[:1].double(), [2e4])


def test_dpo_gradient_hand_worked():
    """d/dpc of -logsig(beta * m) is -beta * sigmoid(-beta * m). At beta = 0.5, beta*m = ln3: sigmoid(-ln3) = 1/4,
    so dpc = -1/8 and dpr = +1/8."""
    pc = torch.tensor([LN3], dtype=torch.float64, requires_grad=True)
    pr = torch.tensor([-LN3], dtype=torch.float64, requires_grad=True)
    dpo_loss(pc, pr, t(0), t(0), 0.5).losses.sum().backward()
    close(pc.grad, [-0.125])
    close(pr.grad, [0.125])
