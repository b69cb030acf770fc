"""`mdpo`: mDPO. Sigmoid DPO + a conditional image preference (the chosen response under the image m beats the
chosen response under a corrupted m') + a reward anchor, `align.losses.mdpo_loss`.

m' is the row's `corrupted_images`, or a random resized crop keeping 1-20% of the area seeded per row by the run's
seed, so policy and reference score the same m' (the collator adds it as a third row group: [3B] rows)."""

from __future__ import annotations

from dataclasses import dataclass, field

from align.ranges import NON_NEGATIVE
from align.train.dpo.variants.base import Variant


@dataclass
class MdpoSettings:
    mdpo_anchor: float = field(
        default=0.0,
        metadata={"help": "mdpo: the reward anchor delta, -logsig(beta * chosen log-ratio - delta) (mDPO's code: 0)."},
    )
    mdpo_dpo_weight: float = field(
        default=1.0,
        metadata={"help": "mdpo: weight of the response-preference (plain DPO) term (mDPO: 1).", "range": NON_NEGATIVE},
    )
    mdpo_conditional_weight: float = field(
        default=1.0,
        metadata={"help": "mdpo: weight of the conditional image-preference term, chosen under m beating chosen "
                          "under the corrupted m' (mDPO: 1).", "range": NON_NEGATIVE},
    )
    mdpo_anchor_weight: float = field(
        default=1.0, metadata={"help": "mdpo: weight of the reward-anchor term (mDPO: 1).", "range": NON_NEGATIVE}
    )


class ConditionalDpo(Variant):
    name = "mdpo"
    help = ("mDPO: sigmoid DPO + conditional image preference (chosen under the image m beats chosen under a "
            "corrupted m': the row's corrupted_images or a seeded 1-20%-area random resized crop) + reward anchor "
            "(mdpo_anchor); weights mdpo_dpo_weight, mdpo_conditional_weight, mdpo_anchor_weight. Rows need "
            "an image.")
    position = 40
    settings = MdpoSettings
    row_groups = 3  # [chosen | rejected | chosen under m']

    def data_options(self, args):
        return {**super().data_options(args), "needs_images": True, "corrupted_images": True}

    def collator_options(self, args, processor=None, family=None):
        return {**super().collator_options(args), "corruption_seed": args.seed}

    def compute_loss(self, trainer, model, inputs, return_outputs):
        """Summed log-probs of the 3B rows from one policy call and one reference call over the same batch (so both
        score the same m')."""
        from align.losses import mdpo_loss
        from align.train.dpo.logps import finish_dpo_terms, pair_logps

        chosen, rejected, corrupted, ref_chosen, ref_rejected, ref_corrupted = pair_logps(
            trainer, model, inputs, groups=self.row_groups)
        args = trainer.args
        out = mdpo_loss(chosen, rejected, corrupted, ref_chosen, ref_rejected, ref_corrupted, trainer.beta,
                        anchor=args.mdpo_anchor, dpo_weight=args.mdpo_dpo_weight,
                        conditional_weight=args.mdpo_conditional_weight, anchor_weight=args.mdpo_anchor_weight)
        return finish_dpo_terms(trainer, self.name, out, chosen, rejected, return_outputs, **{
            "loss/mdpo_dpo": out.dpo_losses, "loss/mdpo_conditional": out.conditional_losses,
            "loss/mdpo_anchor": out.anchor_losses, "rewards/corrupted_chosen": out.corrupted_chosen_rewards,
            "rewards/conditional_margins": out.chosen_rewards - out.corrupted_chosen_rewards,
            "logps/corrupted_chosen": corrupted,
        })

    def cache_settings(self, args):
        return {"seed": args.seed}  # the crops m' derive from it


VARIANT = ConditionalDpo()
