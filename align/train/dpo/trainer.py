"""`AlignDPOTrainer(DPOTrainer)`: TRL's DPO with align's batches, for every family, and the `VARIANTS`.

Overrides (each recorded in tests/unit/test_trl_seam.py):
- `__init__`: the logits-based LM head for families where TRL's fused one does not fit; the reference of a LoRA
  run is the adapter-disabled policy (TRL would add a copy of the adapter named "ref").
- `_prepare_dataset`: identity; align's collator tokenizes (the dataset holds only row indices).
- `_compute_loss`: TRL's own for `dpo`; the variant's for the others (`ddpo_compute_loss`, `hsa_compute_loss`,
  `stic_compute_loss`, `mdpo_compute_loss` below).
"""

from __future__ import annotations

import contextlib

import torch
from trl import DPOTrainer

from align.train.resume import CheckpointResumeMixin

# What TRL's `_compute_loss` reads from the policy's fused-head output (its `__init__` asks for the same).
POLICY_OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")
NON_MODEL_KEYS = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps", "token_weights", "chosen_score",
                  "rejected_score"}


class AlignDPOTrainer(CheckpointResumeMixin, DPOTrainer):
    """DPOTrainer with align's collator and variants; the loss maths of the variants lives in align.losses."""

    def __init__(self, *args, family: str, **kwargs):
        super().__init__(*args, **kwargs)
        from peft import PeftModel

        from align.models.families import get_family
        from align.models.lm_head import add_logits_log_probs_head

        self.family = family
        peft = isinstance(self.model, PeftModel)
        base = self.model.get_base_model() if peft else self.model
        if not get_family(family).fused_lm_head:
            # TRL patched `forward` with its fused head in __init__; replace it with the logits-based one.
            outputs = POLICY_OUTPUTS + (("log_sum_sq_probs",) if self.use_weighting else ())
            add_logits_log_probs_head(base, outputs=outputs)
            if self.ref_model is not None:
                add_logits_log_probs_head(self.accelerator.unwrap_model(self.ref_model), outputs=("log_probs",))
        if peft and "forward" in vars(self.model.base_model):
            # PEFT's adaption-prompt wrapper copied the forward before the LM head was patched (see AlignSFTTrainer).
            self.model.base_model.forward = base.forward
        if peft and "ref" in self.model.peft_config:
            # A fresh adapter disabled is the starting policy; TRL's copy named "ref" would double the adapter
            # memory and be saved with it. Without "ref", TRL's `use_adapter(model, None)` disables the adapter.
            self.model.delete_adapter("ref")
            self.model.set_adapter("default")

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset  # rows are indices; align's PreferenceCollator encodes them

    def _compute_loss(self, model, inputs, return_outputs):
        from align.train.dpo.variants import VARIANTS

        variant = VARIANTS[self.args.variant]
        if variant.compute_loss is None:
            return super()._compute_loss(model, inputs, return_outputs)
        return variant.compute_loss(self, model, inputs, return_outputs)

    # ---- shared by the variants that replace the loss ----

    def per_token_logps(self, model, inputs, reference: bool = False):
        """(per-token log-probs [N, T-1], shifted completion mask [N, T-1]) of the policy or the reference, one model
        call over all N = groups x B rows of the batch (2B; 3B for mdpo)."""
        from trl.models.utils import disable_gradient_checkpointing
        from trl.trainer.utils import use_adapter

        model_kwargs = {k: v for k, v in inputs.items() if k not in NON_MODEL_KEYS}
        model_kwargs["use_cache"] = False
        completion_mask = inputs["completion_mask"]  # [N, T]
        shift_mask = completion_mask[..., 1:]  # [N, T-1]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        if not reference:
            outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        else:
            from accelerate.utils import is_peft_model

            context = contextlib.nullcontext()
            target = self.ref_model
            if self.ref_model is None and is_peft_model(self.model):
                unwrapped = self.accelerator.unwrap_model(self.model)
                context = use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
                target = self.model
            with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs), \
                    context:
                outputs = target(**model_kwargs, labels=labels, fused_lm_head=True)
        # Prompt-learning PEFT prepends virtual tokens to the outputs; keep the positions of the real tokens.
        return outputs.log_probs[:, -shift_mask.size(1):], shift_mask

    def log_terms(self, terms: dict[str, torch.Tensor]) -> None:
        """Per-step metrics, gathered over ranks and averaged like TRL's (`rewards/*`, `logps/*`, `loss/*`)."""
        mode = "train" if self.model.training else "eval"
        for key, value in terms.items():
            self._metrics[mode][key].append(self.accelerator.gather(value.detach().float()).mean().item())


def pair_logps(trainer: AlignDPOTrainer, model, inputs, weights: torch.Tensor | None = None, average: bool = False,
               groups: int = 2):
    """Sequence log-probs [B] of each row group of the policy, then of the reference: with 2 groups (policy chosen,
    policy rejected, reference chosen, reference rejected); with 3 (mdpo) the chosen-under-m' group follows each
    side's rejected one. One model call each for the policy and the reference, over all groups x B rows.

    Summed over the completion tokens, each token weighted by `weights` [N, T-1] when given (ddpo; `average`
    divides by the summed weights), unweighted otherwise (TRL's sum)."""
    from align.losses import weighted_logps

    policy, mask = trainer.per_token_logps(model, inputs)
    ref, _ = trainer.per_token_logps(model, inputs, reference=True)
    ones = torch.ones((), dtype=policy.dtype, device=policy.device)
    logps = weighted_logps(policy, mask, ones if weights is None else weights.to(policy.dtype), average=average)
    ref_logps = weighted_logps(ref, mask, ones if weights is None else weights.to(ref.dtype), average=average)
    if logps.shape[0] % groups:
        raise ValueError(f"a batch of {logps.shape[0]} rows does not split into {groups} row groups")
    # [B] each: the batch is [chosen, rejected] (mdpo: [chosen, rejected, chosen under m'])
    return (*logps.chunk(groups, dim=0), *ref_logps.chunk(groups, dim=0))


def _finish(trainer: AlignDPOTrainer, name: str, out, chosen, rejected, return_outputs, **extra):
    """Log the DPO terms (TRL's names) plus `loss/<name>` and `extra`; the mean loss."""
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
    if return_outputs:
        raise NotImplementedError(f"{name} does not return logits (prediction_loss_only evaluation only)")
    return out.losses.mean()


def ddpo_compute_loss(trainer: AlignDPOTrainer, model, inputs, return_outputs=False):
    """RLHF-V DDPO: token-weighted sequence log-probs (gamma inside the spans) for policy and reference, then
    sigmoid DPO (`align.losses.dpo_loss`)."""
    from align.losses import dpo_loss

    weights = inputs["token_weights"][..., 1:]  # [2B, T-1], aligned with the shifted labels
    chosen, rejected, ref_chosen, ref_rejected = pair_logps(trainer, model, inputs, weights,
                                                            average=trainer.args.ddpo_average)
    out = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, trainer.beta)
    return _finish(trainer, "ddpo", out, chosen, rejected, return_outputs)


def hsa_compute_loss(trainer: AlignDPOTrainer, model, inputs, return_outputs=False):
    """HSA-DPO: summed log-probs, the rejected log-ratio scaled by each pair's `rejected_score` [B] (the chosen one
    by `chosen_score` [B] with hsa_use_chosen_score), `align.losses.hsa_dpo_loss`."""
    from align.losses import hsa_dpo_loss

    chosen, rejected, ref_chosen, ref_rejected = pair_logps(trainer, model, inputs)
    rejected_score = inputs["rejected_score"].to(chosen.dtype)  # [B]
    chosen_score = inputs["chosen_score"].to(chosen.dtype) if trainer.args.hsa_use_chosen_score else None  # [B]
    out = hsa_dpo_loss(chosen, rejected, ref_chosen, ref_rejected, trainer.beta, rejected_score, chosen_score)
    return _finish(trainer, "hsa", out, chosen, rejected, return_outputs, **{"hsa/rejected_score": rejected_score})


def stic_compute_loss(trainer: AlignDPOTrainer, model, inputs, return_outputs=False):
    """STIC stage 1: summed log-probs, sigmoid DPO minus stic_sft_coef x the policy's chosen log-prob
    (`align.losses.stic_loss`). The rejected log-prob is the label gather on the rejected tokens; STIC's code
    instead scores the top-1/top-2 non-label tokens (POVID's `_get_noisy_batch_logps`), which is not reproduced."""
    from align.losses import stic_loss

    chosen, rejected, ref_chosen, ref_rejected = pair_logps(trainer, model, inputs)
    out = stic_loss(chosen, rejected, ref_chosen, ref_rejected, trainer.beta, trainer.args.stic_sft_coef)
    return _finish(trainer, "stic", out, chosen, rejected, return_outputs,
                   **{"loss/stic_dpo": out.dpo_losses, "loss/stic_sft": out.sft_losses})


def mdpo_compute_loss(trainer: AlignDPOTrainer, model, inputs, return_outputs=False):
    """mDPO: summed log-probs of the 3B rows [chosen | rejected | chosen under m'] from one policy call and one
    reference call over the same batch (so both score the same m'), `align.losses.mdpo_loss`."""
    from align.losses import mdpo_loss

    chosen, rejected, corrupted, ref_chosen, ref_rejected, ref_corrupted = pair_logps(trainer, model, inputs,
                                                                                      groups=3)
    args = trainer.args
    out = mdpo_loss(chosen, rejected, corrupted, ref_chosen, ref_rejected, ref_corrupted, trainer.beta,
                    anchor=args.mdpo_anchor, dpo_weight=args.mdpo_dpo_weight,
                    conditional_weight=args.mdpo_conditional_weight, anchor_weight=args.mdpo_anchor_weight)
    return _finish(trainer, "mdpo", out, chosen, rejected, return_outputs, **{
        "loss/mdpo_dpo": out.dpo_losses, "loss/mdpo_conditional": out.conditional_losses,
        "loss/mdpo_anchor": out.anchor_losses, "rewards/corrupted_chosen": out.corrupted_chosen_rewards,
        "rewards/conditional_margins": out.chosen_rewards - out.corrupted_chosen_rewards,
        "logps/corrupted_chosen": corrupted,
    })
