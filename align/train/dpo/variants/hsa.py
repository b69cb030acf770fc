"""`hsa`: HSA-DPO's severity-weighted DPO. Each pair's rejected log-ratio is scaled by its `rejected_score` [B]
(and the chosen one by `chosen_score` with hsa_use_chosen_score), `align.losses.hsa_dpo_loss`."""

from __future__ import annotations

from dataclasses import dataclass, field

from align.train.dpo.variants.base import Variant


@dataclass
class HsaSettings:
    hsa_use_chosen_score: bool = field(
        default=False,
        metadata={"help": "hsa: also scale the chosen log-ratio by each row's chosen_score (HSA-DPO's "
                          "use_chosen_score, default off: chosen weight 1); rows must then carry chosen_score."},
    )


class SeverityDpo(Variant):
    name = "hsa"
    help = ("HSA-DPO severity-weighted DPO: each pair's rejected log-ratio is scaled by its rejected_score (and the "
            "chosen one by chosen_score with hsa_use_chosen_score); rows must carry the scores.")
    position = 20
    settings = HsaSettings

    def config_problems(self, args):
        if not isinstance(args.hsa_use_chosen_score, bool):
            return [f"hsa_use_chosen_score must be true or false, got {args.hsa_use_chosen_score!r}"]
        return []

    def score_fields(self, args):
        return ("rejected_score", "chosen_score") if args.hsa_use_chosen_score else ("rejected_score",)

    def compute_loss(self, trainer, model, inputs, return_outputs):
        from align.losses import hsa_dpo_loss
        from align.train.dpo.logps import finish_dpo_terms, pair_logps

        chosen, rejected, ref_chosen, ref_rejected = pair_logps(trainer, model, inputs)
        rejected_score = inputs["rejected_score"].to(chosen.dtype)  # [B]
        chosen_score = inputs["chosen_score"].to(chosen.dtype) if trainer.args.hsa_use_chosen_score else None  # [B]
        out = hsa_dpo_loss(chosen, rejected, ref_chosen, ref_rejected, trainer.beta, rejected_score, chosen_score)
        return finish_dpo_terms(trainer, self.name, out, chosen, rejected, return_outputs,
                                **{"hsa/rejected_score": rejected_score})


VARIANT = SeverityDpo()
