"""Reward-model and PPO losses against numbers worked out by hand (float64, compared to 1e-9).

-logsigmoid(ln 3) = ln(4/3), -logsigmoid(-ln 3) = ln 4, -logsigmoid(0) = ln 2.
"""

from __future__ import annotations

import math

import pytest
import torch

from align.losses import (
    gae,
    kl_penalty,
    pairwise_reward_loss,
    ppo_policy_loss,
    ppo_value_loss,
    shaped_rewards,
    whiten,
)

LN3 = math.log(3)


def t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def close(actual, expected):
    torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float64),
                               torch.as_tensor(expected, dtype=torch.float64), rtol=0, atol=1e-9)


def test_pairwise_reward_loss_hand_worked():
    """margins (ln 3, -ln 3) -> Bradley-Terry ln(4/3), ln 4; both pairs sum to ln 3, so the centring term is
    1e-3 * |mean(ln 3, ln 3)| = 1e-3 ln 3 on each example."""
    out = pairwise_reward_loss(t(LN3, 0.0), t(0.0, LN3))
    close(out.losses, [math.log(4 / 3) + 1e-3 * LN3, math.log(4) + 1e-3 * LN3])
    close(out.accuracy, [1.0, 0.0])
    assert not out.accuracy.requires_grad


def test_pairwise_reward_loss_centring_is_batch_level():
    """Pairs (1, 1) and (-1, -1) sum to 2 and -2, which cancel in the batch mean: no centring, ln 2 each, and ties
    count as wrong. Pairs (1, 1) twice: mean sum 2 -> + 0.5 * 2 on each example."""
    out = pairwise_reward_loss(t(1.0, -1.0), t(1.0, -1.0), center_coef=0.5)
    close(out.losses, [math.log(2), math.log(2)])
    close(out.accuracy, [0.0, 0.0])
    shifted = pairwise_reward_loss(t(1.0, 1.0), t(1.0, 1.0), center_coef=0.5)  # mean(2, 2) = 2 -> + 0.5 * 2
    close(shifted.losses, [math.log(2) + 1.0, math.log(2) + 1.0])


def test_pairwise_reward_loss_gradient_pushes_chosen_up():
    chosen = t(0.0).requires_grad_()
    rejected = t(0.0).requires_grad_()
    pairwise_reward_loss(chosen, rejected, center_coef=0.0).losses.sum().backward()
    close(chosen.grad, [-0.5])  # d/dc -logsig(c - r) = -(1 - sig(0)) = -1/2
    close(rejected.grad, [0.5])


def test_kl_penalty_k1_is_clamped_and_k3_hand_worked():
    """log-ratios (1, -1): k1 -> (1, 0); k3 = e^-x - 1 + x -> (e^-1, e - 2)."""
    lp, ref = t([-1.0, -2.0]), t([-2.0, -1.0])
    close(kl_penalty(lp, ref, "k1"), [[1.0, 0.0]])
    close(kl_penalty(lp, ref, "k3"), [[math.exp(-1), math.e - 2]])
    with pytest.raises(ValueError, match="k1, k3"):
        kl_penalty(lp, ref, "k2")


def test_whiten_uses_only_masked_positions():
    """(1, 2, 3) masked in, 100 out: mean 2, unbiased var (1 + 0 + 1) / 2 = 1."""
    values, mask = t([1.0, 2.0, 3.0, 100.0]), t([1.0, 1.0, 1.0, 0.0])
    close(whiten(values, mask, eps=0.0), [[-1.0, 0.0, 1.0, 0.0]])
    close(whiten(values, mask, shift_mean=False, eps=0.0), [[1.0, 2.0, 3.0, 0.0]])
    close(whiten(values, mask, moments=(t(0.0), t(4.0)), eps=0.0), [[0.5, 1.0, 1.5, 0.0]])


def test_whiten_population_variance_as_llava_rlhf():
    """(1, 2, 3): mean 2, population var (1 + 0 + 1) / 3 = 2/3, so the whitened values are (-1, 0, 1) / sqrt(2/3)."""
    values, mask = t([1.0, 2.0, 3.0, 100.0]), t([1.0, 1.0, 1.0, 0.0])
    s = math.sqrt(1.5)
    close(whiten(values, mask, eps=0.0, unbiased=False), [[-s, 0.0, s, 0.0]])


def test_shaped_rewards_scale_the_kl_penalty_too_as_llava_rlhf():
    """One 2-token response: policy log-probs (0, 0), reference (-0.5, -0.2) -> k1 KL (0.5, 0.2); kl_coef 0.1,
    score 1, scale 10: rewards 10 x (-0.05, -0.02 + 1) = (-0.5, 9.8). With values 0 and gamma = lambda = 1 the
    returns are the rewards to go: (9.3, 9.8), LLaVA-RLHF's numbers (scaling only the score gave 9.93, 9.98)."""
    kl = kl_penalty(t([0.0, 0.0]), t([-0.5, -0.2]), "k1")
    mask = t([1.0, 1.0])
    rewards = shaped_rewards(kl, t(1.0), mask, kl_coef=0.1, scale=10.0)
    close(rewards, [[-0.5, 9.8]])
    _, returns = gae(rewards, torch.zeros_like(rewards), mask, 1.0, 1.0)
    close(returns, [[9.3, 9.8]])


def test_shaped_rewards_put_the_score_on_each_rows_last_response_token():
    """Row 1's response is columns 1-2 (prompt before, padding after), row 2's column 0-1; KL 1 everywhere, also
    outside the responses, where it must not count. kl_coef 0.5, scores (2, 3), scale 1."""
    kl = t([1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0])
    mask = t([0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0])
    close(shaped_rewards(kl, t(2.0, 3.0), mask, kl_coef=0.5), [[0.0, -0.5, 1.5, 0.0], [-0.5, 2.5, 0.0, 0.0]])


def test_gae_gamma_lambda_one_is_reward_to_go_minus_value():
    """rewards (0, 0, 1), values (0.5, 0.25, 0.5), gamma = lambda = 1: A_t = 1 - V_t, returns all 1."""
    advantages, returns = gae(t([0.0, 0.0, 1.0]), t([0.5, 0.25, 0.5]), t([1.0, 1.0, 1.0]), 1.0, 1.0)
    close(advantages, [[0.5, 0.75, 0.5]])
    close(returns, [[1.0, 1.0, 1.0]])


def test_gae_discounted_hand_worked():
    """gamma = lambda = 0.5: d2 = 1 - 0.5 = 0.5; d1 = 0.5 * 0.5 - 0.25 = 0; d0 = 0.5 * 0.25 - 0.5 = -0.375;
    A2 = 0.5, A1 = 0 + 0.25 * 0.5 = 0.125, A0 = -0.375 + 0.25 * 0.125 = -0.34375; R = A + V."""
    advantages, returns = gae(t([0.0, 0.0, 1.0]), t([0.5, 0.25, 0.5]), t([1.0, 1.0, 1.0]), 0.5, 0.5)
    close(advantages, [[-0.34375, 0.125, 0.5]])
    close(returns, [[0.15625, 0.375, 1.0]])


def test_gae_ignores_positions_outside_the_response():
    """A prompt position before and padding after (rewards and values 9 there) change nothing: the step after
    the last response token is terminal. Row 2 is the same response starting one column earlier."""
    rewards = t([9.0, 0.0, 1.0, 9.0], [0.0, 1.0, 9.0, 9.0])
    values = t([9.0, 0.5, 0.5, 9.0], [0.5, 0.5, 9.0, 9.0])
    mask = t([0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0])
    advantages, returns = gae(rewards, values, mask, 1.0, 1.0)
    close(advantages, [[0.0, 0.5, 0.5, 0.0], [0.5, 0.5, 0.0, 0.0]])
    close(returns, [[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])


def test_ppo_policy_loss_hand_worked():
    """clip 0.2; per token (ratio, A) -> max(-A r, -A clip(r)):
    (1.5, 1) -> max(-1.5, -1.2) = -1.2 clipped;   (0.5, 1) -> max(-0.5, -0.8) = -0.5;
    (0.5, -2) -> max(1.0, 1.6) = 1.6 clipped;     (1, 3) -> -3;   a masked token (ratio 9, A 9) is ignored.
    mean = (-1.2 - 0.5 + 1.6 - 3) / 4 = -0.775; clipfrac 2/4."""
    old = t([0.0, 0.0, 0.0, 0.0, 0.0])
    logprobs = torch.log(t([1.5, 0.5, 0.5, 1.0, 9.0]))
    advantages = t([1.0, 1.0, -2.0, 3.0, 9.0])
    mask = t([1.0, 1.0, 1.0, 1.0, 0.0])
    out = ppo_policy_loss(logprobs, old, advantages, mask, 0.2)
    close(out.loss, -0.775)
    close(out.clipfrac, 0.5)
    log_r = [math.log(1.5), math.log(0.5), math.log(0.5), 0.0]
    close(out.approx_kl, sum(0.5 * x * x for x in log_r) / 4)


def test_ppo_policy_loss_gradient_is_zero_on_clipped_tokens():
    logprobs = torch.log(t([1.5, 0.5])).requires_grad_()
    out = ppo_policy_loss(logprobs, t([0.0, 0.0]), t([1.0, 1.0]), t([1.0, 1.0]), 0.2)
    out.loss.backward()
    close(logprobs.grad, [[0.0, -0.5 * 0.5]])  # d/dlp of -A e^lp / 2 tokens at ratio 0.5


def test_ppo_value_loss_hand_worked():
    """old values 0, clip 0.2: token 1 v = 0.5, R = 1 -> (0.5)^2 = 0.25 vs clipped v 0.2: 0.64 -> 0.64 (clipped);
    token 2 v = -0.1, R = 0 -> 0.01 both ways. loss = 0.5 * (0.64 + 0.01) / 2 = 0.1625; clipfrac 1/2."""
    out = ppo_value_loss(t([0.5, -0.1, 7.0]), t([0.0, 0.0, 0.0]), t([1.0, 0.0, -7.0]), t([1.0, 1.0, 0.0]), 0.2)
    close(out.loss, 0.1625)
    close(out.clipfrac, 0.5)


def test_ppo_losses_divide_by_a_given_token_count():
    """Two ranks' minibatches: rank A has the first 4 tokens of the hand-worked policy example above (sum -3.1), rank
    B one token (ratio 1, A 2 -> -2). Every rank divides by the mean count per rank, (4 + 1) / 2 = 2.5, so the mean
    of the ranks' losses, (-3.1 / 2.5 + -2 / 2.5) / 2 = -5.1 / 5 = -1.02, is the mean over all 5 tokens. Dividing by
    each rank's own count would give (-0.775 + -2) / 2 = -1.3875 instead. Value loss: 0.5 * 0.65 / 2.5 = 0.13."""
    count = torch.tensor(2.5)
    a = ppo_policy_loss(torch.log(t([1.5, 0.5, 0.5, 1.0, 9.0])), t([0.0] * 5), t([1.0, 1.0, -2.0, 3.0, 9.0]),
                        t([1.0, 1.0, 1.0, 1.0, 0.0]), 0.2, count)
    b = ppo_policy_loss(t([0.0]), t([0.0]), t([2.0]), t([1.0]), 0.2, count)
    close(a.loss, -3.1 / 2.5)
    close((a.loss + b.loss) / 2, -1.02)
    close(a.clipfrac, 0.5)  # the logged fractions stay this minibatch's
    value = ppo_value_loss(t([0.5, -0.1, 7.0]), t([0.0, 0.0, 0.0]), t([1.0, 0.0, -7.0]), t([1.0, 1.0, 0.0]), 0.2,
                           count)
    close(value.loss, 0.13)
