"""`AlignSFTTrainer(SFTTrainer)`: supervised fine-tuning of any supported VLM.

TRL's SFTTrainer does the optimisation, logging, checkpointing and DeepSpeed; align supplies the batches (its
own collator: one processor call per batch, loss on assistant turns only, through any family's encoder) and, for
families where TRL's fused LM head does not fit, the log-probs from the model's own logits.
"""

from __future__ import annotations

from trl import SFTTrainer

from align.train.guards import FiniteGuardMixin
from align.train.length_groups import LengthGroupsMixin
from align.train.resume import CheckpointResumeMixin


class AlignSFTTrainer(FiniteGuardMixin, CheckpointResumeMixin, LengthGroupsMixin, SFTTrainer):
    """SFTTrainer with align's collator; the only override swaps the LM head where TRL's fused one does not fit."""

    def __init__(self, *args, family: str, label_tokens_per_row: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.label_tokens_per_row = label_tokens_per_row  # the mean over the data, for length-grouped steps
        from peft import PeftModel

        from align.models.families import get_family
        from align.models.lm_head import add_logits_log_probs_head

        self.family = family
        base = self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model
        if not get_family(family).fused_lm_head:
            # TRL patched `forward` with its fused head in __init__; replace it with the logits-based one.
            add_logits_log_probs_head(base, outputs=("log_probs", "entropy", "is_top1"))
        if isinstance(self.model, PeftModel) and "forward" in vars(self.model.base_model):
            # PEFT's adaption-prompt wrapper copied the model's forward when it was built, before the LM head was
            # patched; point it at the patched one or `fused_lm_head` is silently ignored.
            self.model.base_model.forward = base.forward

    def _get_num_items_in_batch(self, batch_samples: list, device):
        """With length-grouped batches, the loss of a step is divided by the label tokens an average step holds,
        not by the tokens of this one: batches of short answers would otherwise weigh as much as batches of long
        captions and the objective would change with the batching (measured on the quickstart: recall 0.24, one
        caption for every image). In expectation each token then weighs what it weighs in random batches."""
        counted = super()._get_num_items_in_batch(batch_samples, device)
        per_row = self.label_tokens_per_row
        if counted is None or per_row is None or self.args.train_sampling_strategy != "group_by_length":
            return counted
        import torch

        rows = sum(len(batch["input_ids"]) for batch in batch_samples)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            rows *= self.args.world_size
        return torch.as_tensor(per_row * rows, dtype=torch.float32, device=device)
