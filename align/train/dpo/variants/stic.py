"""`stic`: STIC stage 1. Sigmoid DPO on summed log-probs minus `stic_sft_coef` x the policy's chosen log-prob, an
SFT-style regulariser (`align.losses.stic_loss`).

The rejected log-prob is the label gather on the rejected tokens; STIC's code instead scores the top-1/top-2
non-label tokens (POVID's `_get_noisy_batch_logps`), which is not reproduced."""

from __future__ import annotations

from dataclasses import dataclass, field

from align.ranges import NON_NEGATIVE
from align.train.dpo.variants.base import Variant


@dataclass
class SticSettings:
    stic_sft_coef: float = field(
        default=1 / 1024,
        metadata={"help": "stic: coefficient of the policy's summed chosen log-prob subtracted from the DPO loss "
                          "(STIC's code: 1/1024; 0 gives plain sigmoid DPO).", "range": NON_NEGATIVE},
    )


class SticDpo(Variant):
    name = "stic"
    help = ("STIC stage 1: sigmoid DPO minus stic_sft_coef x the policy's summed chosen log-prob (an SFT-style "
            "regulariser; STIC uses 1/1024).")
    position = 30
    settings = SticSettings

    def compute_loss(self, trainer, model, inputs, return_outputs):
        from align.losses import stic_loss
        from align.train.dpo.logps import finish_dpo_terms, pair_logps

        chosen, rejected, ref_chosen, ref_rejected = pair_logps(trainer, model, inputs)
        out = stic_loss(chosen, rejected, ref_chosen, ref_rejected, trainer.beta, trainer.args.stic_sft_coef)
        return finish_dpo_terms(trainer, self.name, out, chosen, rejected, return_outputs,
                                **{"loss/stic_dpo": out.dpo_losses, "loss/stic_sft": out.sft_losses})


VARIANT = SticDpo()
