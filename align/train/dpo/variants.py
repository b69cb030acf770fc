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


def _ddpo_compute_loss(trainer, model, inputs, return_outputs):
    from align.train.dpo.trainer import ddpo_compute_loss

    return ddpo_compute_loss(trainer, model, inputs, return_outputs)


VARIANTS: dict[str, Variant] = {
    "dpo": Variant(help="TRL's DPO; any TRL loss_type (sigmoid, ipo, hinge, ...) passes through unchanged."),
    "ddpo": Variant(
        help="RLHF-V dense DPO: tokens inside chosen_spans / rejected_spans weigh ddpo_gamma in the sequence "
             "log-probs of policy and reference (ddpo_average: divide by the summed weights).",
        needs_spans=True, token_weights=True, compute_loss=_ddpo_compute_loss, sigmoid_only=True,
    ),
}


def get_variant(name: str) -> Variant:
    from align.errors import ConfigError

    if name not in VARIANTS:
        raise ConfigError(f"unknown variant '{name}'; known variants: {', '.join(VARIANTS)}")
    return VARIANTS[name]
