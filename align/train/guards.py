"""Stop a run whose numbers stopped being numbers: a non-finite loss or gradient norm ends training at once with
one line naming the optimizer step, before the optimizer turns the weights into NaN, and nothing is saved as a
finished run. (transformers would go on: `logging_nan_inf_filter` even leaves NaN losses out of the logged mean.)
"""

from __future__ import annotations

import math

import torch

from align.errors import AlignError


class NonFiniteError(AlignError):
    """A loss or gradient norm that is NaN or infinite."""


class FiniteGuardMixin:
    """Mixed into every align trainer, before the transformers/TRL class."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not bool(torch.isfinite(loss.detach()).all()):
            raise NonFiniteError(f"step {self.state.global_step + 1}: the loss is {loss.detach().float().mean().item()}; "
                                 "lower the learning rate or check the data (the run stopped; no final model was "
                                 "written)")
        return loss

    def _get_grad_norm(self, model, grad_norm=None):
        norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        value = float(norm.item() if hasattr(norm, "item") else norm) if norm is not None else 0.0
        if not math.isfinite(value):
            raise NonFiniteError(f"step {self.state.global_step + 1}: the gradient norm is {value}; lower the learning "
                                 "rate or check the data (the run stopped before the optimizer step; no final model "
                                 "was written)")
        return norm
