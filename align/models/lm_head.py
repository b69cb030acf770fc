"""Per-token log-probs for every family through one call: `model(..., labels=labels, fused_lm_head=True)`.

TRL's trainers (SFT, DPO) patch the model with `trl.trainer.utils.add_fused_lm_head` and then read
`outputs.log_probs`. That fused head runs `base_model(...)` and projects `last_hidden_state` through the output
embeddings, which is right for most families and wrong or impossible for a few (see `Family.fused_lm_head`). For
those, `add_logits_log_probs_head` gives the same call and output type, computed from the model's own logits.
"""

from __future__ import annotations

import functools
import types
from typing import Any


def _per_token_stats(logits, labels, temperature: float, outputs: tuple[str, ...]):
    """logits [B, T, V] aligned with labels [B, T] (already shifted) -> FusedCausalLMOutput fields."""
    import torch

    mask = labels != -100  # [B, T]
    scaled = logits.float() / temperature
    log_norm = torch.logsumexp(scaled, dim=-1, keepdim=True)  # [B, T, 1]
    log_p = scaled - log_norm  # [B, T, V]
    log_probs = log_p.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask  # [B, T]
    stats: dict[str, Any] = {"log_probs": log_probs, "label_mask": mask}
    if "entropy" in outputs:
        stats["entropy"] = -(log_p.exp() * log_p).sum(-1) * mask
    if "is_top1" in outputs:
        stats["is_top1"] = (scaled.argmax(-1) == labels) & mask
    with torch.no_grad():
        if "log_sum_sq_probs" in outputs:
            stats["log_sum_sq_probs"] = torch.logsumexp(2 * log_p, dim=-1) * mask
        if "mean_logits" in outputs:
            stats["mean_logits"] = scaled.mean(-1) * mask
    return stats


def add_logits_log_probs_head(model, temperature: float = 1.0,
                              outputs: tuple[str, ...] = ("log_probs", "entropy", "is_top1")) -> None:
    """Patch `model.forward` so `fused_lm_head=True` returns log-probs from the full logits.

    The class's own forward runs (so Chameleon's image-token masking and BLIP-2/Kosmos-2's own embedding of the
    image features apply); without `fused_lm_head` the call is the original one, so generation is unchanged.
    """
    from trl.trainer.utils import FusedCausalLMOutput

    class_forward = type(model).forward

    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None,
                **kwargs):
        if not fused_lm_head:
            if labels is not None:
                kwargs["labels"] = labels
            return class_forward(self, *args, **kwargs)
        kwargs["use_cache"] = False
        logits = class_forward(self, *args, **kwargs).logits  # [B, T, V]
        if shift_labels is None:
            logits, labels = logits[:, :-1], labels[:, 1:]  # position t predicts token t+1
        else:
            labels = shift_labels
        stats = _per_token_stats(logits, labels.to(logits.device), temperature, outputs)
        mask = stats["label_mask"]
        denominator = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(loss=-stats["log_probs"].sum() / denominator, **stats)

    # The class forward's signature, as generate reads it to check its arguments (Chameleon's pixel_values reach
    # the model only through **kwargs of prepare_inputs_for_generation).
    model.forward = types.MethodType(functools.wraps(class_forward)(forward), model)


def add_log_probs_head(model, family: str, **kwargs: Any) -> None:
    """TRL's fused head where it is right for the family, the logits-based one elsewhere."""
    from align.models.families import get_family

    if get_family(family).fused_lm_head:
        from trl.trainer.utils import add_fused_lm_head

        add_fused_lm_head(model, **kwargs)
    else:
        add_logits_log_probs_head(model, **kwargs)
