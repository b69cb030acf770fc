"""`dpo`: TRL's DPO, untouched; every TRL `loss_type` (sigmoid, ipo, hinge, ...) and loss option passes through."""

from __future__ import annotations

from align.train.dpo.variants.base import Variant


class TrlDpo(Variant):
    name = "dpo"
    help = "TRL's DPO; any TRL loss_type (sigmoid, ipo, hinge, ...) passes through unchanged."
    position = 0
    sigmoid_only = False

    def compute_loss(self, trainer, model, inputs, return_outputs):
        from trl import DPOTrainer

        return DPOTrainer._compute_loss(trainer, model, inputs, return_outputs)

    def reference_values(self, trainer, module, inputs):
        chosen, rejected = trainer.compute_ref_log_probs(module, inputs)  # TRL's own
        return {"ref_chosen_logps": chosen, "ref_rejected_logps": rejected}


VARIANT = TrlDpo()
