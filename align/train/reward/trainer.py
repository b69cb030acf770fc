"""`RewardModelTrainer(Trainer)`: Bradley-Terry + centring on a `ScalarHeadModel`, accuracy on held-out pairs.

TRL's RewardTrainer reads text only, so the reward model trains on transformers' Trainer (optimisation,
checkpoints, DeepSpeed); batches come from `RewardCollator` (2B sequences, chosen first) and the loss is
`align.losses.pairwise_reward_loss`. Saving writes the backbone (adapter or whole), the head and the processor.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from transformers import Trainer

from align.losses import pairwise_reward_loss
from align.models.scalar_head import last_token_scores
from align.train.guards import FiniteGuardMixin


class RewardModelTrainer(FiniteGuardMixin, Trainer):
    def __init__(self, *args, center_coef: float = 1e-3, **kwargs):
        super().__init__(*args, **kwargs)
        self.center_coef = center_coef
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}

    def _pair_scores(self, model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        scores = last_token_scores(model(**inputs), inputs["attention_mask"])  # [2B]
        half = scores.shape[0] // 2
        return scores[:half], scores[half:]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        chosen, rejected = self._pair_scores(model, inputs)
        out = pairwise_reward_loss(chosen, rejected, self.center_coef)
        mode = "train" if model.training else "eval"
        for key, value in {"accuracy": out.accuracy.mean(), "rewards/chosen": chosen.mean(),
                           "rewards/rejected": rejected.mean(), "rewards/margin": (chosen - rejected).mean()}.items():
            self._metrics[mode][key].append(self.accelerator.gather(value.detach().float()).mean().item())
        loss = out.losses.mean()
        return (loss, torch.stack([chosen, rejected], dim=1)) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss, pair = self.compute_loss(model, inputs, return_outputs=True)
        if prediction_loss_only:
            return loss.detach(), None, None
        return loss.detach(), pair.detach(), torch.zeros(pair.shape[0], device=pair.device)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "eval" if any(key.startswith("eval_") for key in logs) else "train"
        prefix = "eval_" if mode == "eval" else ""
        for key, values in self._metrics[mode].items():
            if values:
                logs[prefix + key] = sum(values) / len(values)
        self._metrics[mode].clear()
        super().log(logs, start_time)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """Resuming: backbone and head from what `_save` wrote (DeepSpeed restores its own engine state)."""
        if self.is_deepspeed_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model=model)
        from align.train.resume import restore_scalar_head_model

        restore_scalar_head_model(self.accelerator.unwrap_model(self.model), resume_from_checkpoint)
        return None

    def _save(self, output_dir: str | None = None, state_dict=None):
        if not self.args.should_save:  # under ZeRO-3 only rank 0 holds the gathered state_dict
            return
        output_dir = output_dir or self.args.output_dir
        model = self.accelerator.unwrap_model(self.model)
        model.save_pretrained(output_dir, state_dict=state_dict, processor=self.processing_class)
        torch.save(self.args, f"{output_dir}/training_args.bin")


def pair_accuracy(eval_prediction) -> dict[str, float]:
    """`compute_metrics`: share of held-out pairs whose chosen side scores strictly higher (ties are wrong)."""
    import numpy as np

    pair = np.asarray(eval_prediction.predictions)  # [N, 2]: chosen, rejected
    return {"accuracy": float((pair[:, 0] > pair[:, 1]).mean())}
