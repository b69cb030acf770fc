"""The `VARIANTS` registry: what each `--variant` changes relative to TRL's DPOTrainer.

A variant with `compute_loss=None` is TRL's own `_compute_loss`, untouched (`dpo`: every TRL `loss_type` passes
through). Others replace only the loss computation and keep TRL's optimisation, logging and checkpointing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Variant:
    help: str
    needs_spans: bool = False  # rows must carry chosen_spans / rejected_spans
    token_weights: bool = False  # the collator adds `token_weights` [2B, T]
    compute_loss: Callable[..., Any] | None = None  # (trainer, model, inputs, return_outputs) -> loss
    sigmoid_only: bool = False  # only TRL's plain "sigmoid" loss makes sense with it
    needs_scores: bool = False  # rows must carry rejected_score (and chosen_score, see `score_fields`); the collator
    # adds them as `rejected_score` / `chosen_score` [B]
    corrupted_chosen: bool = False  # rows must carry an image; the collator adds a third row group, the chosen
    # response under the corrupted image m' (the row's `corrupted_images`, or a seeded random resized crop): [3B]
    phrase_pairs: bool = False  # the k-th chosen span pairs with the k-th rejected one; the collator adds phrase_ids
    kl_samples: bool = False  # the collator adds `kl_inputs`, SFT samples (kl_data) for a KL term
    noisy_chosen: bool = False  # rows must carry an image; the collator adds `noisy_inputs` (chosen, noised image)
    cacheable: bool = True  # precompute_ref_log_probs can stand in for the reference model

    def score_fields(self, config) -> tuple[str, ...]:
        """The per-row score fields this variant reads under `config` (checked on every row, then batched)."""
        if not self.needs_scores:
            return ()
        return ("rejected_score", "chosen_score") if config.hsa_use_chosen_score else ("rejected_score",)


def _ddpo_compute_loss(trainer, model, inputs, return_outputs):
    from align.train.dpo.trainer import ddpo_compute_loss

    return ddpo_compute_loss(trainer, model, inputs, return_outputs)


def _hsa_compute_loss(trainer, model, inputs, return_outputs):
    from align.train.dpo.trainer import hsa_compute_loss

    return hsa_compute_loss(trainer, model, inputs, return_outputs)


def _stic_compute_loss(trainer, model, inputs, return_outputs):
    from align.train.dpo.trainer import stic_compute_loss

    return stic_compute_loss(trainer, model, inputs, return_outputs)


def _mdpo_compute_loss(trainer, model, inputs, return_outputs):
    from align.train.dpo.trainer import mdpo_compute_loss

    return mdpo_compute_loss(trainer, model, inputs, return_outputs)


VARIANTS: dict[str, Variant] = {
    "dpo": Variant(help="TRL's DPO; any TRL loss_type (sigmoid, ipo, hinge, ...) passes through unchanged."),
    "ddpo": Variant(
        help="RLHF-V dense DPO: tokens inside chosen_spans / rejected_spans weigh ddpo_gamma in the sequence "
             "log-probs of policy and reference (ddpo_average: divide by the summed weights).",
        needs_spans=True, token_weights=True, compute_loss=_ddpo_compute_loss, sigmoid_only=True,
    ),
    "hsa": Variant(
        help="HSA-DPO severity-weighted DPO: each pair's rejected log-ratio is scaled by its rejected_score (and the "
             "chosen one by chosen_score with hsa_use_chosen_score); rows must carry the scores.",
        needs_scores=True, compute_loss=_hsa_compute_loss, sigmoid_only=True,
    ),
    "stic": Variant(
        help="STIC stage 1: sigmoid DPO minus stic_sft_coef x the policy's summed chosen log-prob (an SFT-style "
             "regulariser; STIC uses 1/1024).",
        compute_loss=_stic_compute_loss, sigmoid_only=True,
    ),
    "mdpo": Variant(
        help="mDPO: sigmoid DPO + conditional image preference (chosen under the image m beats chosen under a "
             "corrupted m': the row's corrupted_images or a seeded 1-20%-area random resized crop) + reward anchor "
             "(mdpo_anchor); weights mdpo_dpo_weight, mdpo_conditional_weight, mdpo_anchor_weight. Rows need "
             "an image.",
        corrupted_chosen=True, compute_loss=_mdpo_compute_loss, sigmoid_only=True,
    ),
}


def _halva_compute_loss(trainer, model, inputs, return_outputs):
    from align.train.dpo.trainer import halva_compute_loss

    return halva_compute_loss(trainer, model, inputs, return_outputs)


def _povid_compute_loss(trainer, model, inputs, return_outputs):
    from align.train.dpo.trainer import povid_compute_loss

    return povid_compute_loss(trainer, model, inputs, return_outputs)


VARIANTS["halva"] = Variant(
    help="HALVA phrase-level alignment: the k-th chosen span (correct phrase) against the k-th rejected span "
         "(hallucinated phrase), log(1 + exp(LPh - LPc)), no reference or beta; plus halva_alpha x forward "
         "KL(reference || policy) on SFT samples from kl_data. Rows need chosen_spans / rejected_spans, as many "
         "on each side.",
    needs_spans=True, phrase_pairs=True, kl_samples=True, compute_loss=_halva_compute_loss, sigmoid_only=True,
    cacheable=False,
)
VARIANTS["povid"] = Variant(
    help="POVID stage 2: povid_text_weight x DPO(chosen, rejected) + povid_noise_weight x DPO(chosen, y_noise), "
         "y_noise = the argmax tokens of a forward on the chosen response with the diffusion-noised image "
         "(step povid_noise_step), scored under the clean image. Stage 1 is variant dpo. Rows need an image.",
    noisy_chosen=True, compute_loss=_povid_compute_loss, sigmoid_only=True,
)


def get_variant(name: str) -> Variant:
    from align.errors import ConfigError

    if name not in VARIANTS:
        raise ConfigError(f"unknown variant '{name}'; known variants: {', '.join(VARIANTS)}")
    return VARIANTS[name]
