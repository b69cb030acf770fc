"""`AlignDPOTrainer(DPOTrainer)`: TRL's DPO with align's batches, for every family, and the `VARIANTS`.

Overrides (each recorded in tests/unit/test_trl_seam.py):
- `__init__`: the logits-based LM head for families where TRL's fused one does not fit; the reference of a LoRA
  run is the adapter-disabled policy (TRL would add a copy of the adapter named "ref").
- `_prepare_dataset`: identity; align's collator tokenizes (the dataset holds only row indices).
- `_compute_loss`: TRL's own for `dpo`; the variant's for the others (`ddpo_compute_loss` below).
"""

from __future__ import annotations

import contextlib

import torch
from trl import DPOTrainer

from align.train.resume import CheckpointResumeMixin

# What TRL's `_compute_loss` reads from the policy's fused-head output (its `__init__` asks for the same).
POLICY_OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")
NON_MODEL_KEYS = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps", "token_weights"}


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
        """(per-token log-probs [2B, T-1], shifted completion mask [2B, T-1]) of the policy or the reference."""
        from trl.models.utils import disable_gradient_checkpointing
        from trl.trainer.utils import use_adapter

        model_kwargs = {k: v for k, v in inputs.items() if k not in NON_MODEL_KEYS}
        model_kwargs["use_cache"] = False
        completion_mask = inputs["completion_mask"]  # [2B, T]
        shift_mask = completion_mask[..., 1:]  # [2B, T-1]
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


def ddpo_compute_loss(trainer: AlignDPOTrainer, model, inputs, return_outputs=False):
    """RLHF-V DDPO: token-weighted sequence log-probs (gamma inside the spans) for policy and reference, then
    sigmoid DPO (`align.losses.dpo_loss`)."""
    from align.losses import dpo_loss, weighted_logps

    weights = inputs["token_weights"][..., 1:]  # [2B, T-1], aligned with the shifted labels
    average = trainer.args.ddpo_average
    policy, mask = trainer.per_token_logps(model, inputs)
    logps = weighted_logps(policy, mask, weights.to(policy.dtype), average=average)  # [2B]
    ref, _ = trainer.per_token_logps(model, inputs, reference=True)
    ref_logps = weighted_logps(ref, mask, weights.to(ref.dtype), average=average)  # [2B]
    chosen, rejected = logps.chunk(2, dim=0)  # [B] each: the batch is [chosen, rejected]
    ref_chosen, ref_rejected = ref_logps.chunk(2, dim=0)
    out = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, trainer.beta)
    loss = out.losses.mean()
    trainer.log_terms({
        "loss/ddpo": out.losses,
        "rewards/chosen": out.chosen_rewards,
        "rewards/rejected": out.rejected_rewards,
        "rewards/accuracies": (out.chosen_rewards > out.rejected_rewards).float(),
        "rewards/margins": out.chosen_rewards - out.rejected_rewards,
        "logps/chosen": chosen,
        "logps/rejected": rejected,
    })
    if return_outputs:
        raise NotImplementedError("ddpo does not return logits (prediction_loss_only evaluation only)")
    return loss
