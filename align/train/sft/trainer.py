"""`AlignSFTTrainer(SFTTrainer)`: supervised fine-tuning of any supported VLM.

TRL's SFTTrainer does the optimisation, logging, checkpointing and DeepSpeed; align supplies the batches (its
own collator: one processor call per batch, loss on assistant turns only, through any family's encoder) and, for
families where TRL's fused LM head does not fit, the log-probs from the model's own logits.
"""

from __future__ import annotations

from trl import SFTTrainer

from align.train.guards import FiniteGuardMixin
from align.train.resume import CheckpointResumeMixin


class AlignSFTTrainer(FiniteGuardMixin, CheckpointResumeMixin, SFTTrainer):
    """SFTTrainer with align's collator; the only override swaps the LM head where TRL's fused one does not fit."""

    def __init__(self, *args, family: str, **kwargs):
        super().__init__(*args, **kwargs)
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
