"""`ddpo`: RLHF-V's dense DPO. Tokens inside the rows' chosen_spans / rejected_spans (the corrected and the
hallucinated segments) weigh `ddpo_gamma` in the sequence log-probs of policy and reference, then sigmoid DPO
(`align.losses.dpo_loss`); with `ddpo_sft_coef`, minus that coefficient x the policy's weighted chosen log-prob
(`align.losses.stic_loss`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from align.ranges import NON_NEGATIVE, POSITIVE
from align.train.dpo.variants.base import Variant


@dataclass
class DdpoSettings:
    ddpo_gamma: float = field(
        default=1.1,
        metadata={"help": "ddpo: weight of the tokens inside chosen/rejected spans (1 elsewhere); RLHF-V's "
                          "run_RLHFV.sh uses 1.1, its dataclass default is 3.0.", "range": POSITIVE},
    )
    ddpo_average: bool = field(
        default=False,
        metadata={"help": "ddpo: divide each weighted log-prob by its summed weights (the paper's 1/N; Muffin's "
                          "dpo_use_average)."},
    )
    ddpo_sft_coef: float = field(
        default=0.0,
        metadata={"help": "ddpo: coefficient of the policy's weighted chosen log-prob subtracted from the loss, an "
                          "SFT term that keeps the chosen responses likely (Muffin's SFT_weight; default 0, plain "
                          "DDPO).", "range": NON_NEGATIVE},
    )


class DenseDpo(Variant):
    name = "ddpo"
    help = ("RLHF-V dense DPO: tokens inside chosen_spans / rejected_spans weigh ddpo_gamma in the sequence "
            "log-probs of policy and reference (ddpo_average: divide by the summed weights; ddpo_sft_coef: an SFT "
            "term on the chosen side).")
    position = 10
    settings = DdpoSettings

    def data_options(self, args):
        return {**super().data_options(args), "needs_spans": True}

    def collator_options(self, args, processor=None, family=None):
        return {**super().collator_options(args), "gamma": args.ddpo_gamma}

    def token_weights(self, args, inputs):
        return inputs["token_weights"][..., 1:]  # [2B, T-1], aligned with the shifted labels

    def average_logps(self, args):
        return args.ddpo_average

    def compute_loss(self, trainer, model, inputs, return_outputs):
        from align.losses import dpo_loss
        from align.train.dpo.logps import finish_dpo_terms, pair_logps

        args = trainer.args
        chosen, rejected, ref_chosen, ref_rejected = pair_logps(trainer, model, inputs, self.token_weights(args, inputs),
                                                                average=self.average_logps(args))
        if not args.ddpo_sft_coef:
            out = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, trainer.beta)
            return finish_dpo_terms(trainer, self.name, out, chosen, rejected, return_outputs)
        from align.losses import stic_loss

        out = stic_loss(chosen, rejected, ref_chosen, ref_rejected, trainer.beta, args.ddpo_sft_coef)
        return finish_dpo_terms(trainer, self.name, out, chosen, rejected, return_outputs,
                                **{"loss/ddpo_dpo": out.dpo_losses, "loss/ddpo_sft": out.sft_losses})

    def cache_settings(self, args):
        return {"ddpo_gamma": args.ddpo_gamma, "ddpo_average": args.ddpo_average}


VARIANT = DenseDpo()
