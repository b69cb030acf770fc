"""`halva`: HALVA's phrase-level alignment. The k-th chosen span (a correct phrase) against the k-th rejected span
(its hallucinated replacement), log(1 + exp(LPh - LPc)) without a reference or beta
(`align.losses.halva_alignment_loss`), plus `halva_alpha` x the forward KL(reference || policy) on SFT samples
from `kl_data`, which keeps the model's other answers where they were."""

from __future__ import annotations

from dataclasses import dataclass, field

from align.ranges import NON_NEGATIVE
from align.train.dpo.variants.base import Variant


@dataclass
class HalvaSettings:
    halva_alpha: float = field(
        default=0.4,
        metadata={"help": "halva: weight of the forward KL(reference || policy) on kl_data samples (HALVA-7B 0.4, "
                          "HALVA-13B 0.5; 0 turns the term and the need for kl_data off).", "range": NON_NEGATIVE},
    )
    kl_data: str | None = field(
        default=None,
        metadata={"help": "halva: SFT data (messages + images) whose assistant tokens carry the KL term; each pair "
                          "row r is matched with sample r mod N (HALVA: a subset of LLaVA-1.5's mix665k)."},
    )


class PhraseAlignment(Variant):
    name = "halva"
    help = ("HALVA phrase-level alignment: the k-th chosen span (correct phrase) against the k-th rejected span "
            "(hallucinated phrase), log(1 + exp(LPh - LPc)), no reference or beta; plus halva_alpha x forward "
            "KL(reference || policy) on SFT samples from kl_data. Rows need chosen_spans / rejected_spans, as many "
            "on each side.")
    position = 50
    settings = HalvaSettings
    cacheable = False  # the KL term needs the reference's whole distribution on every step

    def config_problems(self, args):
        if args.halva_alpha > 0 and not args.kl_data:
            return ["variant halva needs kl_data (SFT samples for its KL term), or halva_alpha=0"]
        return []

    def data_options(self, args):
        return {**super().data_options(args), "needs_spans": True, "phrase_pairs": True}

    def collator_options(self, args, processor=None, family=None):
        options = {**super().collator_options(args), "phrase_ids": True}
        if args.kl_data and args.halva_alpha > 0 and processor is not None:
            from align.train.sft.data import load_sft_data

            options["kl"] = load_sft_data(args.kl_data, processor, family, args.image_root, args.max_length,
                                          args.too_long, progress=False)
        return options

    def compute_loss(self, trainer, model, inputs, return_outputs):
        """Phrase alignment, mean over the batch's phrase pairs, + halva_alpha x the forward KL on the batch's SFT
        samples (`kl_inputs`), summed over tokens and vocabulary, mean over samples."""
        import torch

        from align.losses import forward_kl, halva_alignment_loss, phrase_logps
        from align.train.dpo.logps import refuse_outputs

        per_token, mask = trainer.per_token_logps(model, inputs)  # [2B, T-1]
        phrase_ids = inputs["phrase_ids"][..., 1:] * mask  # [2B, T-1], aligned with the shifted labels
        chosen_tokens, rejected_tokens = per_token.chunk(2, dim=0)
        chosen_ids, rejected_ids = phrase_ids.chunk(2, dim=0)
        correct = phrase_logps(chosen_tokens, chosen_ids)  # [K]
        hallucinated = phrase_logps(rejected_tokens, rejected_ids)  # [K]
        alignment = halva_alignment_loss(correct, hallucinated)  # [K]
        loss = alignment.mean()
        alpha = trainer.args.halva_alpha
        kl = torch.zeros(1, device=loss.device)
        if alpha > 0:
            samples = inputs["kl_inputs"]
            kl_mask = samples["completion_mask"][..., 1:]  # [B, T'-1]
            policy_logits = trainer.logits(model, samples)[:, :-1]  # [B, T'-1, V]
            ref_logits = trainer.logits(model, samples, reference=True)[:, :-1]
            kl = forward_kl(ref_logits, policy_logits, kl_mask)  # [B]
            loss = loss + alpha * kl.mean()
        sums = ((per_token * mask).sum(dim=1)).detach().chunk(2, dim=0)
        trainer.log_terms({
            "loss/halva": loss.detach(),
            "loss/halva_align": alignment.detach(),
            "loss/halva_kl": kl.detach(),
            "halva/phrase_margins": (correct - hallucinated).detach(),
            "halva/phrase_accuracies": (correct > hallucinated).float(),
            "halva/phrases": torch.tensor([float(correct.numel())], device=loss.device),
            "logps/chosen": sums[0],
            "logps/rejected": sums[1],
        })
        refuse_outputs(self.name, return_outputs)
        return loss


VARIANT = PhraseAlignment()
