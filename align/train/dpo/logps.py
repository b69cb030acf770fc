"""Sequence log-probs and DPO term logging that the variants share, over the trainer's forward helpers
(`AlignDPOTrainer.per_token_logps`, `.log_terms`; any object with those methods serves)."""

from __future__ import annotations

import torch

# The cached reference values of the row groups, in the batch's group order.
CACHED_GROUPS = ("ref_chosen_logps", "ref_rejected_logps", "ref_corrupted_chosen_logps")


def sequence_logps(trainer, model, inputs, weights: torch.Tensor | None = None, average: bool = False,
                   reference: bool = False, ref_module=None) -> torch.Tensor:
    """[N] summed completion log-probs of every row, each token weighted by `weights` [N, T-1] when given."""
    from align.losses import weighted_logps

    per_token, mask = trainer.per_token_logps(model, inputs, reference=reference, ref_module=ref_module)
    w = torch.ones((), dtype=per_token.dtype, device=per_token.device) if weights is None else weights
    return weighted_logps(per_token, mask, w.to(per_token.dtype), average=average)


def pair_logps(trainer, model, inputs, weights: torch.Tensor | None = None, average: bool = False,
               groups: int = 2):
    """Sequence log-probs [B] of each row group of the policy, then of the reference: with 2 groups (policy chosen,
    policy rejected, reference chosen, reference rejected); with 3 (mdpo) the chosen-under-m' group follows each
    side's rejected one. One model call each for the policy and the reference, over all groups x B rows.

    Summed over the completion tokens, each token weighted by `weights` [N, T-1] when given (ddpo; `average`
    divides by the summed weights), unweighted otherwise (TRL's sum)."""
    logps = sequence_logps(trainer, model, inputs, weights, average)
    if logps.shape[0] % groups:
        raise ValueError(f"a batch of {logps.shape[0]} rows does not split into {groups} row groups")
    cached = CACHED_GROUPS[:groups]
    if all(name in inputs for name in cached):  # precompute_ref_log_probs: the reference values ride in the batch
        ref_groups = tuple(inputs[name].to(logps.dtype) for name in cached)
    else:
        ref_groups = sequence_logps(trainer, model, inputs, weights, average, reference=True).chunk(groups, dim=0)
    # [B] each: the batch is [chosen, rejected] (mdpo: [chosen, rejected, chosen under m'])
    return (*logps.chunk(groups, dim=0), *ref_groups)


def finish_dpo_terms(trainer, name: str, out, chosen, rejected, return_outputs: bool, **extra) -> torch.Tensor:
    """Log the DPO terms of `out` (a loss output with losses, chosen_rewards, rejected_rewards; TRL's metric names)
    plus `loss/<name>` and `extra`; the mean loss."""
    trainer.log_terms({
        f"loss/{name}": out.losses,
        "rewards/chosen": out.chosen_rewards,
        "rewards/rejected": out.rejected_rewards,
        "rewards/accuracies": (out.chosen_rewards > out.rejected_rewards).float(),
        "rewards/margins": out.chosen_rewards - out.rejected_rewards,
        "logps/chosen": chosen,
        "logps/rejected": rejected,
        **extra,
    })
    refuse_outputs(name, return_outputs)
    return out.losses.mean()


def refuse_outputs(name: str, return_outputs: bool) -> None:
    if return_outputs:
        raise NotImplementedError(f"{name} does not return logits (prediction_loss_only evaluation only)")
