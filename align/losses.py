"""Preference losses as pure tensor functions: trainers gather log-probs and call these.

Every loss returns the per-example loss `[B]` (the trainer takes the mean), alone or as the first field of a
NamedTuple whose other fields are detached terms worth logging. Inputs are summed sequence log-probs `[B]` unless
noted; `beta` has TRL's meaning (the DPO temperature multiplying the log-ratio margin).

    dpo_loss(pc, pr, rc, rr, beta)                       -> DPOLoss(losses, chosen_rewards, rejected_rewards)
    weighted_logps(per_token_logps, mask, weights)       -> [B]   RLHF-V DDPO's token-weighted log-prob
    mdpo_loss(pc, pr, pcc, rc, rr, rcc, beta, ...)       -> MDPOLoss(losses, dpo/conditional/anchor terms, rewards)
    hsa_dpo_loss(pc, pr, rc, rr, beta, rejected_score)   -> DPOLoss   HSA-DPO: severity-weighted rejected log-ratio
    stic_loss(pc, pr, rc, rr, beta, sft_coef)            -> STICLoss  DPO - sft_coef * lp_pi(chosen)
    povid_loss(pc, pr, pnr, rc, rr, rnr, beta, ...)      -> POVIDLoss text-hallucination DPO + noisy-image DPO
    phrase_logps(per_token_logps, phrase_ids)            -> [K]   HALVA: summed log-prob per marked phrase
    halva_alignment_loss(correct, hallucinated)          -> [K]   HALVA: softplus(LPh - LPc) per phrase pair
    forward_kl(ref_logits, policy_logits, mask)          -> [B]   HALVA: KL(ref || policy) summed over tokens, vocab

Reward model and PPO (LLaVA-RLHF), token inputs `[B, T]` with a `mask` of the response tokens that count:

    pairwise_reward_loss(chosen, rejected, center_coef)  -> RewardLoss(losses, accuracy)  Bradley-Terry + centring
    kl_penalty(logprobs, ref_logprobs, estimator)        -> [B, T] per-token KL estimate (k1 clamped at 0, or k3)
    shaped_rewards(kl, score, mask, kl_coef, scale)      -> [B, T] per-token rewards: KL penalty + terminal score
    whiten(values, mask, shift_mean, unbiased)           -> [B, T] masked whitening (advantages, rewards)
    gae(rewards, values, mask, gamma, lam)               -> (advantages, returns) [B, T]
    ppo_policy_loss(lp, old_lp, advantages, mask, clip)  -> PPOPolicyLoss(loss, clipfrac, approx_kl) token means
    ppo_value_loss(v, old_v, returns, mask, clip)        -> PPOValueLoss(loss, clipfrac) token means

The two PPO losses are scalars, means over every response token of the minibatch, not per-example: a per-example
mean would weigh a short response's tokens more than a long one's. LLaVA-RLHF's code differs here: its plain
`.mean()` runs over the whole right-padded response block, padding included (see `masked_mean`).

Short names: the first letter is p (policy) or r (reference), the rest c (chosen), r (rejected), cc (chosen under
the corrupted image, mDPO's m') or nr (POVID's noisy-image rejected sequence). Where a variant's extra terms are switched off it reduces to
`dpo_loss` exactly (tested): mdpo with weights (1, 0, 0), hsa with scores 1, stic with sft_coef 0, povid with
weights (1, 0), and ddpo with all token weights 1 and `average=False`.

Rewards are `beta * (policy - reference)` log-ratios, detached, as TRL logs them. TRL 1.16's "sigmoid" loss has no
label smoothing (smoothing lives in its "robust" and "aot" losses), so neither has `dpo_loss`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class DPOLoss(NamedTuple):
    """losses [B] (carries the gradient); chosen/rejected_rewards [B] = beta * (policy - ref) logps, detached."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


class MDPOLoss(NamedTuple):
    """losses [B] = weighted sum of the three terms; the terms [B] unweighted and detached; rewards detached.

    `corrupted_chosen_rewards` is mDPO's "imageless" reward: beta * (lp_pi(yw|m') - lp_ref(yw|m')).
    """

    losses: torch.Tensor
    dpo_losses: torch.Tensor
    conditional_losses: torch.Tensor
    anchor_losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    corrupted_chosen_rewards: torch.Tensor


class STICLoss(NamedTuple):
    """losses [B]; dpo_losses [B] (the sigmoid DPO part) and sft_losses [B] = -sft_coef * lp_pi(yw), detached."""

    losses: torch.Tensor
    dpo_losses: torch.Tensor
    sft_losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


class POVIDLoss(NamedTuple):
    """losses [B] = text_weight * text_losses + noise_weight * noise_losses; the two DPO terms [B] unweighted.

    `noisy_rejected_rewards` = beta * (lp_pi(y_noise) - lp_ref(y_noise)), detached.
    """

    losses: torch.Tensor
    text_losses: torch.Tensor
    noise_losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    noisy_rejected_rewards: torch.Tensor


def _sigmoid_loss(margin: torch.Tensor, beta: float) -> torch.Tensor:
    # -log sigmoid(beta * margin): F.logsigmoid is stable for margins of any sign and size (no exp overflow), and it
    # is the exact expression of TRL's "sigmoid" branch, so results agree bit for bit on the same inputs.
    return -F.logsigmoid(beta * margin)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> DPOLoss:
    """Sigmoid DPO: -logsigmoid(beta * ((pc - rc) - (pr - rr))), per example.

    All inputs [B] summed sequence log-probs. Same as TRL 1.16's `loss_type="sigmoid"` with the default
    `f_divergence_type="reverse_kl"`, whose margin is `chosen_logratios - rejected_logratios` in the same order.
    """
    chosen_logratios = policy_chosen_logps - ref_chosen_logps  # [B]
    rejected_logratios = policy_rejected_logps - ref_rejected_logps  # [B]
    losses = _sigmoid_loss(chosen_logratios - rejected_logratios, beta)
    return DPOLoss(losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach())


def weighted_logps(
    per_token_logps: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor, average: bool = False
) -> torch.Tensor:
    """RLHF-V DDPO's token-weighted sequence log-prob: sum_t w_t * logp_t over masked tokens, per example.

    per_token_logps [B, T]; mask [B, T] (bool or 0/1, true on response tokens); weights [B, T] (gamma on changed
    segments, 1 elsewhere; anything broadcastable to [B, T]). With `average=True` the sum is divided by the sum of
    the masked weights, the paper's 1/N with N = |y_u| + gamma * |y_c| (Muffin's `dpo_use_average`); an example
    with no masked weight gives 0 there instead of 0/0.

    Masked-out tokens are excluded exactly: their log-probs and weights are replaced by 0 before multiplying, so
    padding holding -inf or NaN changes neither the value nor the gradient. Returns [B].
    """
    if per_token_logps.dim() != 2 or mask.shape != per_token_logps.shape:
        raise ValueError(
            f"weighted_logps wants per_token_logps and mask of the same [B, T] shape; "
            f"got {tuple(per_token_logps.shape)} and {tuple(mask.shape)}"
        )
    keep = mask.bool()
    weights = torch.as_tensor(weights, dtype=per_token_logps.dtype, device=per_token_logps.device)
    weights = torch.where(
        keep, weights.expand_as(per_token_logps), torch.zeros_like(per_token_logps)
    )  # [B, T]
    logps = torch.where(keep, per_token_logps, torch.zeros_like(per_token_logps))  # [B, T]
    total = (weights * logps).sum(dim=-1)  # [B]
    if not average:
        return total
    norm = weights.sum(dim=-1)  # [B] = |y_u| + gamma * |y_c|
    # Divide by a safe denominator where it is zero, so neither the value nor the gradient turns into NaN.
    safe = torch.where(norm != 0, norm, torch.ones_like(norm))
    return torch.where(norm != 0, total / safe, torch.zeros_like(total))


def mdpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    policy_corrupted_chosen_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    ref_corrupted_chosen_logps: torch.Tensor,
    beta: float,
    anchor: float = 0.0,
    dpo_weight: float = 1.0,
    conditional_weight: float = 1.0,
    anchor_weight: float = 1.0,
) -> MDPOLoss:
    """mDPO, as in its `mdpo_trainer.py`: response DPO + conditional image preference + reward anchor.

        dpo         = -logsig(beta * [(pc - rc) - (pr - rr)])             yw beats yl, same image m
        conditional = -logsig(beta * [(pc - rc) - (pcc - rcc)])           yw under m beats yw under m'
        anchor      = -logsig(beta * (pc - rc) - anchor)                  chosen reward kept above `anchor`
        loss        = dpo_weight * dpo + conditional_weight * conditional + anchor_weight * anchor

    `*_corrupted_chosen_logps` [B] score the chosen response under the corrupted image m' (mDPO's random
    1-20%-area crop; its code calls this "imageless"). mDPO's code uses weights 1, 1, 1 and anchor 0; the anchor
    sits outside the beta product, as in the paper's delta. Note that mDPO's conditional margin is
    (pc - pcc) - (rc - rcc), which is the same number regrouped.
    """
    chosen_logratios = policy_chosen_logps - ref_chosen_logps  # [B]
    rejected_logratios = policy_rejected_logps - ref_rejected_logps  # [B]
    corrupted_logratios = policy_corrupted_chosen_logps - ref_corrupted_chosen_logps  # [B]
    dpo_term = _sigmoid_loss(chosen_logratios - rejected_logratios, beta)
    conditional_term = _sigmoid_loss(chosen_logratios - corrupted_logratios, beta)
    anchor_term = -F.logsigmoid(beta * chosen_logratios - anchor)
    losses = dpo_weight * dpo_term + conditional_weight * conditional_term + anchor_weight * anchor_term
    return MDPOLoss(
        losses,
        dpo_term.detach(),
        conditional_term.detach(),
        anchor_term.detach(),
        beta * chosen_logratios.detach(),
        beta * rejected_logratios.detach(),
        beta * corrupted_logratios.detach(),
    )


def hsa_dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    rejected_score: torch.Tensor | float,
    chosen_score: torch.Tensor | float | None = None,
) -> DPOLoss:
    """HSA-DPO: -logsig(beta * [w_c * (pc - rc) - w_r * (pr - rr)]), w_r = rejected_score, w_c = chosen_score or 1.

    Scores [B] (or scalars) are the hallucination-severity weights stored with each pair; a more severe rejected
    response pushes its likelihood down harder. HSA-DPO's code applies the weights to the policy and reference
    log-probs separately (w_c*pc - w_r*pr) - (w_c*rc - w_r*rr), which is the same number. The rewards returned are
    the unweighted beta * (policy - ref), comparable with plain DPO's.
    """
    chosen_logratios = policy_chosen_logps - ref_chosen_logps  # [B]
    rejected_logratios = policy_rejected_logps - ref_rejected_logps  # [B]
    w_c = 1.0 if chosen_score is None else chosen_score
    losses = _sigmoid_loss(w_c * chosen_logratios - rejected_score * rejected_logratios, beta)
    return DPOLoss(losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach())


def stic_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    sft_coef: float = 1 / 1024,
) -> STICLoss:
    """STIC stage 1: -logsig(beta * h) - sft_coef * lp_pi(yw), with h the DPO margin and lp_pi(yw) summed [B].

    STIC's code uses sft_coef = 1/1024. Its "rejected" log-prob is built upstream (top-1/top-2 non-label tokens,
    inherited from POVID); that is the trainer's business, this function takes whatever log-probs it is given.
    """
    dpo = dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    sft_term = -sft_coef * policy_chosen_logps  # [B]; a log-prob is <= 0, so this term is >= 0
    losses = dpo.losses + sft_term
    return STICLoss(losses, dpo.losses.detach(), sft_term.detach(), dpo.chosen_rewards, dpo.rejected_rewards)


def povid_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    policy_noisy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    ref_noisy_rejected_logps: torch.Tensor,
    beta: float,
    text_weight: float = 0.5,
    noise_weight: float = 0.5,
) -> POVIDLoss:
    """POVID stage 2: text_weight * DPO(yw, yl_text) + noise_weight * DPO(yw, y_noise), per example.

    `*_noisy_rejected_logps` [B] score y_noise: the argmax tokens of a teacher-forced forward on yw with the noisy
    image, scored under the clean image (for the reference too). POVID's code uses 0.5 / 0.5; stage 1 is plain DPO,
    i.e. weights (1, 0).
    """
    text = dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    noise = dpo_loss(
        policy_chosen_logps, policy_noisy_rejected_logps, ref_chosen_logps, ref_noisy_rejected_logps, beta
    )
    losses = text_weight * text.losses + noise_weight * noise.losses
    return POVIDLoss(
        losses,
        text.losses.detach(),
        noise.losses.detach(),
        text.chosen_rewards,
        text.rejected_rewards,
        noise.rejected_rewards,
    )


def phrase_logps(per_token_logps: torch.Tensor, phrase_ids: torch.Tensor) -> torch.Tensor:
    """Summed log-prob of each marked phrase, flattened in (example, phrase id) order, for HALVA.

    per_token_logps [B, T]; phrase_ids [B, T] integers: 0 = not in a phrase (negative ids such as -100 count as 0),
    k >= 1 = the k-th phrase of that example. Returns [K] where K = total number of distinct (example, id) pairs
    present: example 0's phrases in increasing id, then example 1's, and so on. Ids need not be contiguous; an id
    absent from an example contributes nothing (HALVA's own code instead pads the absent (example, id) cells with
    0, which adds log 2 with no gradient to its mean). Tokens outside phrases are excluded exactly, so padding
    that holds -inf or NaN changes neither the value nor the gradient.

    Call it once on the correct and once on the hallucinated response: their k-th entries are a phrase pair when
    both sides mark the same phrase ids in the same examples.
    """
    if per_token_logps.dim() != 2 or phrase_ids.shape != per_token_logps.shape:
        raise ValueError(
            f"phrase_logps wants per_token_logps and phrase_ids of the same [B, T] shape; "
            f"got {tuple(per_token_logps.shape)} and {tuple(phrase_ids.shape)}"
        )
    ids = phrase_ids.long().clamp(min=0)  # [B, T]
    in_phrase = ids > 0
    logps = torch.where(in_phrase, per_token_logps, torch.zeros_like(per_token_logps))  # [B, T]
    num_ids = int(ids.max().item()) + 1 if ids.numel() else 1
    # [B, num_ids]: column k sums the tokens with id k; column 0 collects the (zeroed) non-phrase tokens.
    sums = logps.new_zeros(ids.shape[0], num_ids).scatter_add(1, ids, logps)
    present = torch.zeros(ids.shape[0], num_ids, dtype=torch.bool, device=ids.device)
    present.scatter_(1, ids, in_phrase)  # True where some token carries id k (column 0 stays False)
    # Boolean indexing walks rows first, so the result is in (example, id) order.
    return sums[present]


def halva_alignment_loss(
    correct_phrase_logps: torch.Tensor, hallucinated_phrase_logps: torch.Tensor
) -> torch.Tensor:
    """HALVA's phrase alignment: log(1 + exp(LPh_k - LPc_k)) = -logsig(LPc_k - LPh_k) per phrase pair.

    Inputs [K] summed phrase log-probs (see `phrase_logps`), the k-th correct phrase paired with the k-th
    hallucinated one. No reference model, no beta. Softplus keeps large differences finite (exp would overflow
    at LPh - LPc > 88 in float32). Returns [K]; HALVA averages it over pairs and batch.
    """
    if correct_phrase_logps.shape != hallucinated_phrase_logps.shape:
        raise ValueError(
            f"halva_alignment_loss pairs the k-th correct phrase with the k-th hallucinated one; got "
            f"{tuple(correct_phrase_logps.shape)} correct and {tuple(hallucinated_phrase_logps.shape)} hallucinated "
            f"phrase log-probs (the two responses must mark the same phrases)"
        )
    return F.softplus(hallucinated_phrase_logps - correct_phrase_logps)


def forward_kl(ref_logits: torch.Tensor, policy_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Forward KL(ref || policy) per example: sum over masked tokens t and vocabulary v of p_ref (log p_ref - log p).

    ref_logits, policy_logits [B, T, V] (ref from the frozen initial model, computed without grad); mask [B, T]
    true on the response tokens that count. Returns float32 [B]; HALVA's divergence D = (1/B) sum_b KL_b is
    `forward_kl(...).mean()`.

    Only masked tokens are selected before the softmax, so masked-out positions are excluded exactly and cost no
    memory; log-probs come from log_softmax in float32 (HALVA's softmax-then-log underflows to -inf for tiny
    probabilities). Vocabulary entries with p_ref = 0 (a -inf reference logit) contribute 0, the limit of
    p log p, instead of 0 * -inf = NaN.
    """
    if ref_logits.shape != policy_logits.shape or ref_logits.dim() != 3 or mask.shape != ref_logits.shape[:2]:
        raise ValueError(
            f"forward_kl wants ref_logits and policy_logits [B, T, V] and mask [B, T]; got "
            f"{tuple(ref_logits.shape)}, {tuple(policy_logits.shape)} and {tuple(mask.shape)}"
        )
    keep = mask.bool()  # [B, T]
    batch_index = keep.nonzero(as_tuple=True)[0]  # [N] example of each kept token
    ref_logp = F.log_softmax(ref_logits[keep].float(), dim=-1)  # [N, V]
    policy_logp = F.log_softmax(policy_logits[keep].float(), dim=-1)  # [N, V]
    ref_p = ref_logp.exp()
    per_entry = torch.where(ref_p > 0, ref_p * (ref_logp - policy_logp), torch.zeros_like(ref_p))  # [N, V]
    per_token = per_entry.sum(dim=-1)  # [N]
    out = per_token.new_zeros(ref_logits.shape[0])  # [B]
    return out.index_add(0, batch_index, per_token)


# ------------------------------------------------------------------------------ reward model and PPO


class RewardLoss(NamedTuple):
    """losses [B]; accuracy [B] detached: 1 where the chosen reward is strictly higher (a tie counts as wrong, so a
    zero-initialised head starts at 0, not at a flattering 1)."""

    losses: torch.Tensor
    accuracy: torch.Tensor


def pairwise_reward_loss(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, center_coef: float = 1e-3
) -> RewardLoss:
    """Bradley-Terry on [B] scalar rewards plus LLaVA-RLHF's centring term:

        L_b = -logsig(r_c,b - r_r,b) + center_coef * | mean_b'(r_c,b' + r_r,b') |

    The centring term is one batch-level number added to every example, so `losses.mean()` is exactly LLaVA-RLHF's
    BCEWithLogits(r_1 - r_0, choice) + center_coef * |mean(r_1 + r_0)|; it keeps the rewards near zero, which PPO's
    reward scale depends on."""
    if chosen_rewards.shape != rejected_rewards.shape or chosen_rewards.dim() != 1:
        raise ValueError(f"pairwise_reward_loss wants chosen and rejected rewards [B]; got "
                         f"{tuple(chosen_rewards.shape)} and {tuple(rejected_rewards.shape)}")
    margin = chosen_rewards - rejected_rewards  # [B]
    centring = center_coef * (chosen_rewards + rejected_rewards).mean().abs()  # scalar
    losses = -F.logsigmoid(margin) + centring
    return RewardLoss(losses, (margin > 0).to(margin.dtype).detach())


KL_ESTIMATORS = ("k1", "k3")


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token KL(policy || reference) estimate from the sampled tokens' log-probs [B, T].

    k1: log pi - log ref, clamped at 0 (LLaVA-RLHF's default: a token the policy likes less than the reference is
    not rewarded); k3: (r - 1) - log r with r = ref / pi, unbiased and never negative (Schulman's estimator)."""
    log_ratio = logprobs - ref_logprobs  # [B, T]
    if estimator == "k1":
        return log_ratio.clamp(min=0)
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"kl estimator must be one of {', '.join(KL_ESTIMATORS)}, got {estimator!r}")


def masked_mean(values: torch.Tensor, mask: torch.Tensor, count: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of `values` over the positions where `mask` is 1 (0 when none are); with `count`, their sum divided by
    `count` instead of by the mask's size (a data-parallel rank divides by the mean count of every rank's
    minibatch, so that averaging the ranks' gradients gives the mean over all their tokens).

    align's PPO losses and logs average over response tokens only. LLaVA-RLHF's code takes plain means over its
    right-padded response block, padding included, so its per-token means shrink with the padding of a batch;
    that figure depends on how a batch happened to be padded, so align does not offer it."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / (mask.sum() if count is None else count).clamp(min=1)


def shaped_rewards(kl: torch.Tensor, score: torch.Tensor, mask: torch.Tensor, kl_coef: float,
                   scale: float = 1.0) -> torch.Tensor:
    """Per-token PPO rewards [B, T]: -kl_coef * kl on every response token, plus each row's terminal `score` [B]
    at its last response token, all times `scale`.

    `mask` [B, T] is 1 on the response tokens (one block per row). The scale multiplies the whole shaped reward,
    KL penalty included, as LLaVA-RLHF's `_estimate_advantage` multiplies it by 10 when rewards are not
    whitened; scaling the score alone would make the KL penalty `scale` times weaker relative to it."""
    mask = mask.to(kl.dtype)
    rewards = -kl_coef * kl * mask
    last = mask.shape[1] - 1 - mask.flip(1).argmax(dim=1)  # [B] each response's last token
    rewards[torch.arange(rewards.shape[0], device=rewards.device), last] += score.to(rewards.dtype)
    return rewards * scale


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True,
           moments: tuple[torch.Tensor, torch.Tensor] | None = None, eps: float = 1e-8,
           unbiased: bool = True) -> torch.Tensor:
    """(values - mean) / std over the masked positions; with shift_mean=False the mean is added back (LLaVA-RLHF
    whitens rewards that way). `moments` = (mean, var) computed elsewhere, e.g. over every rank's rollouts.
    Masked-out positions come back 0.

    The variance is the sample one (Bessel's correction, N - 1) by default; unbiased=False gives the population
    one (N) that LLaVA-RLHF's `whiten` uses. The two differ by a factor sqrt(N / (N - 1)), which matters only
    for tiny rollouts (N is every response token of a rollout)."""
    mask = mask.to(values.dtype)
    if moments is None:
        mean = masked_mean(values, mask)
        count = mask.sum()
        denominator = (count - 1).clamp(min=1) if unbiased else count.clamp(min=1)
        var = (((values - mean) ** 2) * mask).sum() / denominator
    else:
        mean, var = moments
    out = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over [B, T] per-token rewards and values.

    `mask` [B, T] is 1 on each response's tokens, one contiguous block per row (it may start anywhere and be
    followed by padding); the step after a row's last token is terminal (value 0). With d_t = r_t + gamma *
    V_{t+1} - V_t, A_t = d_t + gamma * lam * A_{t+1}; returns R_t = A_t + V_t. Both are 0 outside the mask."""
    if not rewards.shape == values.shape == mask.shape or rewards.dim() != 2:
        raise ValueError(f"gae wants rewards, values and mask [B, T]; got {tuple(rewards.shape)}, "
                         f"{tuple(values.shape)} and {tuple(mask.shape)}")
    mask = mask.to(values.dtype)
    values = values * mask
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])  # [B] A_{t+1}
    next_value = torch.zeros_like(values[:, 0])  # [B] V_{t+1}, 0 past the response
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
        next_value = values[:, t]  # 0 where masked, so padding after a response reads as terminal
    return advantages, (advantages + values) * mask


class PPOPolicyLoss(NamedTuple):
    """loss (scalar, carries the gradient); clipfrac and approx_kl (scalars, detached)."""

    loss: torch.Tensor
    clipfrac: torch.Tensor
    approx_kl: torch.Tensor


def ppo_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                    mask: torch.Tensor, clip_range: float = 0.2,
                    token_count: torch.Tensor | None = None) -> PPOPolicyLoss:
    """PPO's clipped surrogate over [B, T] response tokens:

        ratio = exp(lp - lp_old);  L = mean_t max(-A ratio, -A clip(ratio, 1 - c, 1 + c))

    `token_count`: what the loss's token sum is divided by, when not this minibatch's tokens (`masked_mean`).

    clipfrac: the share of tokens where the clipped term is the larger (its gradient is 0);
    approx_kl: mean 0.5 (lp - lp_old)^2."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask, token_count)
    clipfrac = masked_mean((clipped > unclipped).to(loss.dtype), mask).detach()
    approx_kl = masked_mean(0.5 * log_ratio.detach() ** 2, mask)
    return PPOPolicyLoss(loss, clipfrac, approx_kl)


class PPOValueLoss(NamedTuple):
    """loss (scalar, carries the gradient); clipfrac (scalar, detached)."""

    loss: torch.Tensor
    clipfrac: torch.Tensor


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                   clip_range_value: float = 0.2, token_count: torch.Tensor | None = None) -> PPOValueLoss:
    """The clipped value loss over [B, T] response tokens:

        v_clip = old_v + clip(v - old_v, -c, c);  L = 0.5 mean_t max((v - R)^2, (v_clip - R)^2)

    `token_count`: as for `ppo_policy_loss`.

    clipfrac: the share of tokens where the clipped error is the larger."""
    clipped_values = old_values + (values - old_values).clamp(-clip_range_value, clip_range_value)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask, token_count)
    clipfrac = masked_mean((clipped_error > unclipped_error).to(loss.dtype), mask).detach()
    return PPOValueLoss(loss, clipfrac)


# ------------------------------------------------------------------------------------ GRPO group advantages

REWARD_AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")


def _nanstd(values: torch.Tensor, dim: int | None = None, keepdim: bool = False) -> torch.Tensor:
    """Sample standard deviation (N - 1) ignoring NaN; NaN where fewer than two values are set."""
    mean = torch.nanmean(values, dim=dim, keepdim=True)
    count = (~torch.isnan(values)).sum(dim=dim, keepdim=True)
    square = torch.nansum((values - mean) ** 2, dim=dim, keepdim=True)
    std = torch.where(count > 1, (square / (count - 1).clamp(min=1)).sqrt(), torch.full_like(square, float("nan")))
    return std if keepdim or dim is None else std.squeeze(dim)


class GroupAdvantages(NamedTuple):
    advantages: torch.Tensor  # [N]: 0 for a completion no reward function scored
    rewards: torch.Tensor  # [N] weighted sum of the functions' rewards; NaN where none scored
    zero_std: torch.Tensor  # [N] bool: its group (or batch) gives no signal: one reward for all, or < 2 scored


def group_advantages(rewards_per_func: torch.Tensor, weights: torch.Tensor, num_generations: int,
                     scale: str = "group", aggregation: str = "sum_then_normalize",
                     eps: float = 1e-4) -> GroupAdvantages:
    """GRPO's advantages of N = groups x num_generations completions, consecutive completions of one prompt forming
    a group, from rewards_per_func [N, F] (NaN: that function did not score that completion) and weights [F].

    sum_then_normalize (GRPO): r = sum_f w_f r_f; A = (r - mean of r over the group) / (std + eps), the std that of
    the group (scale "group"), of the whole batch ("batch"), or no division ("none", Dr. GRPO).
    normalize_then_sum (GDPO): each function's rewards are normalised within the group first, weighted and summed,
    and the sum is normalised over the batch. Standard deviations are the sample ones (N - 1), NaN values left out.
    """
    n, f = rewards_per_func.shape
    unscorable = torch.isnan(rewards_per_func).all(dim=1)  # [N]
    if aggregation == "sum_then_normalize":
        rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1).masked_fill(unscorable, float("nan"))
        grouped = rewards.view(-1, num_generations)  # [G, num_generations]
        mean = torch.nanmean(grouped, dim=1).repeat_interleave(num_generations)
        if scale == "batch":
            std = _nanstd(rewards).expand_as(rewards)
        elif num_generations > 1:
            std = _nanstd(grouped, dim=1).repeat_interleave(num_generations)
        else:
            std = torch.zeros_like(rewards)
        advantages = rewards - mean
        if scale != "none":
            advantages = advantages / (std + eps)
    elif aggregation == "normalize_then_sum":
        grouped = rewards_per_func.view(-1, num_generations, f)
        per_func = (grouped - torch.nanmean(grouped, dim=1, keepdim=True)) / (_nanstd(grouped, dim=1, keepdim=True) + eps)
        rewards = (per_func.view(n, f) * weights.unsqueeze(0)).nansum(dim=1).masked_fill(unscorable, float("nan"))
        std = _nanstd(rewards).expand_as(rewards)
        advantages = (rewards - torch.nanmean(rewards)) / (std + eps)
    else:
        raise ValueError(f"aggregation must be one of {', '.join(REWARD_AGGREGATIONS)}, got {aggregation!r}")
    zero_std = torch.isclose(torch.nan_to_num(std, nan=0.0), torch.zeros_like(std))
    return GroupAdvantages(torch.nan_to_num(advantages, nan=0.0), rewards, zero_std)
