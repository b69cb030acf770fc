"""`povid`: POVID stage 2 (stage 1 is variant `dpo`). povid_text_weight x DPO(chosen, rejected) + povid_noise_weight
x DPO(chosen, y_noise), `align.losses.povid_loss`: y_noise is, at each position of the chosen response, the token
the model predicts when its image is diffusion-noised (step povid_noise_step), scored under the clean image."""

from __future__ import annotations

from dataclasses import dataclass, field

from align.ranges import NON_NEGATIVE, Range
from align.train.dpo.variants.base import Variant


@dataclass
class PovidSettings:
    povid_text_weight: float = field(
        default=0.5, metadata={"help": "povid: weight of DPO(chosen, rejected) (POVID's code: 0.5).",
                               "range": NON_NEGATIVE}
    )
    povid_noise_weight: float = field(
        default=0.5, metadata={"help": "povid: weight of DPO(chosen, y_noise) (POVID's code: 0.5).",
                               "range": NON_NEGATIVE}
    )
    povid_noise_step: int = field(
        default=500, metadata={"help": "povid: diffusion step t of the noised image, of 1000 (POVID: 500).",
                               "range": Range(0, 1000, high_open=True)}
    )


class NoisyImageDpo(Variant):
    name = "povid"
    help = ("POVID stage 2: povid_text_weight x DPO(chosen, rejected) + povid_noise_weight x DPO(chosen, y_noise), "
            "y_noise = the argmax tokens of a forward on the chosen response with the diffusion-noised image "
            "(step povid_noise_step), scored under the clean image. Stage 1 is variant dpo. Rows need an image.")
    position = 60
    settings = PovidSettings

    def data_options(self, args):
        return {**super().data_options(args), "needs_images": True}

    def collator_options(self, args, processor=None, family=None):
        from align.train.dpo.data import povid_noise

        return {**super().collator_options(args), "noise": povid_noise(args.povid_noise_step), "noise_seed": args.seed}

    def compute_loss(self, trainer, model, inputs, return_outputs):
        from align.losses import povid_loss
        from align.train.dpo.logps import finish_dpo_terms

        chosen, rejected, noisy = povid_logps(trainer, model, inputs)
        if "ref_noisy_rejected_logps" in inputs:
            ref_chosen, ref_rejected, ref_noisy = (inputs[k].to(chosen.dtype) for k in REFERENCE_COLUMNS)
        else:
            ref_chosen, ref_rejected, ref_noisy = povid_logps(trainer, model, inputs, reference=True)
        args = trainer.args
        out = povid_loss(chosen, rejected, noisy, ref_chosen, ref_rejected, ref_noisy, trainer.beta,
                         text_weight=args.povid_text_weight, noise_weight=args.povid_noise_weight)
        return finish_dpo_terms(trainer, self.name, out, chosen, rejected, return_outputs, **{
            "loss/povid_text": out.text_losses, "loss/povid_noise": out.noise_losses,
            "rewards/noisy_rejected": out.noisy_rejected_rewards,
            "rewards/noise_margins": out.chosen_rewards - out.noisy_rejected_rewards,
            "logps/noisy_rejected": noisy.detach(),
        })

    def reference_values(self, trainer, module, inputs):
        values = povid_logps(trainer, module, inputs, reference=True, ref_module=module)
        return dict(zip(REFERENCE_COLUMNS, values, strict=True))

    def cache_settings(self, args):
        return {"seed": args.seed, "povid_noise_step": args.povid_noise_step}  # the noised images derive from them


REFERENCE_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps", "ref_noisy_rejected_logps")


def povid_logps(trainer, model, inputs, reference: bool = False, ref_module=None):
    """POVID stage 2's three [B] log-probs of one model (policy with grad, or reference): chosen and rejected
    (summed label log-probs under the clean image) and y_noise: at each completion position the argmax token of a
    teacher-forced forward on the chosen response with the noised image (`noisy_inputs`, no grad: argmax has none),
    scored under the same model's clean-image forward on the chosen response. Each model takes its own argmax
    tokens, as POVID's code does (its reference re-runs the whole procedure with the LoRA disabled).

    The clean forward returns full logits [2B, T, V] (it serves both the labels and the argmax tokens)."""
    import torch

    logits = trainer.logits(model, inputs, reference=reference, ref_module=ref_module)[:, :-1].float()  # [2B, T-1, V]
    logp = logits.log_softmax(dim=-1)
    mask = inputs["completion_mask"][..., 1:]  # [2B, T-1]
    labels = inputs["input_ids"][..., 1:]
    label_logps = (logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1) * mask).sum(dim=1)  # [2B]
    chosen, rejected = label_logps.chunk(2, dim=0)
    noisy = inputs["noisy_inputs"]
    with torch.no_grad():
        if reference:
            noisy_logits = trainer.logits(model, noisy, reference=True, ref_module=ref_module)
        else:
            noisy_logits = _no_grad_logits(trainer, model, noisy)
        argmax = noisy_logits[:, :-1].argmax(dim=-1)  # [B, T_n-1] the token the noisy-image model predicts next
    batch = chosen.shape[0]
    chosen_mask = mask[:batch]  # [B, T-1]
    width = min(argmax.shape[1], chosen_mask.shape[1])  # rows are flushed left: position t is the same token
    if not torch.equal(noisy["completion_mask"][:, 1:width + 1], chosen_mask[:, :width]) or \
            chosen_mask[:, width:].any():
        raise RuntimeError("the noised chosen rows do not encode like the clean ones (image token counts differ?)")
    tokens = argmax[:, :width]
    noise_logps = (logp[:batch, :width].gather(-1, tokens.unsqueeze(-1)).squeeze(-1) * chosen_mask[:, :width]).sum(1)
    return chosen, rejected, noise_logps


def _no_grad_logits(trainer, model, inputs):
    from trl.models.utils import disable_gradient_checkpointing

    with disable_gradient_checkpointing(trainer.model, trainer.args.gradient_checkpointing_kwargs):
        return trainer.logits(model, inputs)


VARIANT = NoisyImageDpo()
