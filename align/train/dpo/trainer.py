"""`AlignDPOTrainer(DPOTrainer)`: TRL's DPO with align's batches, for every family, and the `VARIANTS`.

Overrides (each recorded in tests/unit/test_trl_seam.py):
- `__init__`: the logits-based LM head for families where TRL's fused one does not fit; the reference of a LoRA
  run is the adapter-disabled policy (TRL would add a copy of the adapter named "ref").
- `_prepare_dataset`: identity; align's collator tokenizes (the dataset holds only row indices).
- `_compute_loss`: TRL's own for `dpo`; the variant's for the others (`ddpo_compute_loss`, `hsa_compute_loss`,
  `stic_compute_loss`, `mdpo_compute_loss`, `halva_compute_loss`, `povid_compute_loss` below).
- `_precompute_ref_logps` (with `precompute_ref_log_probs`): the reference values every variant needs, cached in
  a file keyed by the data's and the reference model's fingerprints (`align.train.dpo.ref_cache`), since TRL's
  own cache is keyed by the in-memory index dataset, which is the same for any data of the same length.
"""

from __future__ import annotations

import contextlib

import torch
from trl import DPOTrainer

from align.train.guards import FiniteGuardMixin
from align.train.resume import CheckpointResumeMixin

# What TRL's `_compute_loss` reads from the policy's fused-head output (its `__init__` asks for the same).
POLICY_OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")
NON_MODEL_KEYS = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps", "ref_corrupted_chosen_logps",
                  "ref_noisy_rejected_logps", "token_weights", "chosen_score", "rejected_score", "phrase_ids",
                  "noisy_inputs", "kl_inputs"}


class AlignDPOTrainer(FiniteGuardMixin, CheckpointResumeMixin, DPOTrainer):
    """DPOTrainer with align's collator and variants; the loss maths of the variants lives in align.losses."""

    def __init__(self, *args, family: str, ref_cache=None, show_progress: bool = True, **kwargs):
        # Read by `_precompute_ref_logps`, which TRL's __init__ calls.
        self.family, self.ref_cache, self.ref_cache_status = family, ref_cache, None
        self.show_progress = show_progress
        self._align_ready = False
        super().__init__(*args, **kwargs)
        self._align_setup()
        if self.args.precompute_ref_log_probs and self.ref_model is not None:
            self.ref_model = None  # its values are cached; training does not need it in memory

    def _align_setup(self) -> None:
        """After TRL's setup (and before its precompute pass, which runs inside TRL's __init__): the LM head and
        the adapters as align needs them. Idempotent."""
        if self._align_ready:
            return
        self._align_ready = True
        from peft import PeftModel

        from align.models.families import get_family
        from align.models.lm_head import add_logits_log_probs_head

        peft = isinstance(self.model, PeftModel)
        base = self.model.get_base_model() if peft else self.model
        if not get_family(self.family).fused_lm_head:
            # TRL patched `forward` with its fused head in __init__; replace it with the logits-based one.
            outputs = POLICY_OUTPUTS + (("log_sum_sq_probs",) if self.use_weighting else ())
            add_logits_log_probs_head(base, outputs=outputs)
            if self.ref_model is not None:
                add_logits_log_probs_head(self.accelerator.unwrap_model(self.ref_model), outputs=("log_probs",))
        if peft and "forward" in vars(self.model.base_model):
            # PEFT's adaption-prompt wrapper copied the forward before the LM head was patched (see AlignSFTTrainer).
            self.model.base_model.forward = base.forward
        if peft and "ref" in self.model.peft_config:
            # A fresh adapter disabled is the starting policy; TRL's copy named "ref" would double the adapter
            # memory and be saved with it. Without "ref", TRL's `use_adapter(model, None)` disables the adapter.
            self.model.delete_adapter("ref")
            self.model.set_adapter("default")

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset  # rows are indices; align's PreferenceCollator encodes them

    def _compute_loss(self, model, inputs, return_outputs):
        from align.train.dpo.variants import VARIANTS

        variant = VARIANTS[self.args.variant]
        if variant.compute_loss is None:
            return super()._compute_loss(model, inputs, return_outputs)
        return variant.compute_loss(self, model, inputs, return_outputs)

    def _precompute_ref_logps(self, dataset, name, batch_size):
        """The reference values of every row (`reference_values`), from `ref_cache` when it holds them, else
        computed in one pass (sharded over ranks like TRL's) and saved there; returned as dataset columns."""
        from accelerate.utils import broadcast_object_list
        from torch.utils.data import DataLoader
        from trl.models import prepare_deepspeed

        from align.progress import progress_task

        self._align_setup()
        if self.ref_cache is None:
            raise RuntimeError("precompute_ref_log_probs needs a ref_cache (align.train.dpo.ref_cache.RefCache)")
        # ZeRO-3 hashes each rank's shard: take rank 0's so every rank reads and writes the same file.
        key = [self.ref_cache.key(self._precompute_model_hash, name)]
        broadcast_object_list(key, from_process=0)
        key = key[0]
        values = self.ref_cache.load(key)
        self.ref_cache_status = {"split": name, "file": str(self.ref_cache.path(key)), "hit": values is not None}
        if values is None:
            loader = self.accelerator.prepare(DataLoader(
                dataset, batch_size=batch_size, collate_fn=self.data_collator, shuffle=False,
                num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory))
            if self.ref_model is None and self.is_deepspeed_enabled:
                if self._precompute_engine is None:
                    self._precompute_engine = prepare_deepspeed(self.model, self.accelerator)
                module = self._precompute_engine
            else:
                module = self.ref_model or self.model
            columns: dict[str, list[torch.Tensor]] = {}
            show = self.show_progress and self.accelerator.is_main_process
            with progress_task(f"reference log-probs ({name})", len(loader), "batches", enabled=show,
                               transient=True) as task:
                for batch in loader:
                    with torch.no_grad():
                        part = reference_values(self, module, batch)
                    part = self.accelerator.gather_for_metrics(part)
                    for column, value in part.items():
                        columns.setdefault(column, []).append(value.detach().float().cpu())
                    if task is not None:
                        task.advance()
            values = {column: torch.cat(parts) for column, parts in columns.items()}
            if self.accelerator.is_main_process:
                self.ref_cache.save(key, values, self._precompute_model_hash)
            self.accelerator.wait_for_everyone()
        for column, value in values.items():
            if value.shape[0] != len(dataset):
                raise RuntimeError(f"the reference cache {self.ref_cache.path(key)} holds {value.shape[0]} rows, "
                                   f"the data {len(dataset)}; delete the file")
            dataset = dataset.add_column(column, value.tolist())
        return dataset

    # ---- shared by the variants that replace the loss ----

    def _call(self, model, inputs, reference: bool, ref_module=None, **kwargs):
        """One forward of the policy (`reference=False`, with grad) or of the reference (no grad): `ref_module` when
        given (the precompute pass), else the separate reference model, else the policy with its adapter off."""
        from accelerate.utils import is_peft_model
        from trl.models.utils import disable_gradient_checkpointing
        from trl.trainer.utils import use_adapter

        model_kwargs = {k: v for k, v in inputs.items() if k not in NON_MODEL_KEYS}
        model_kwargs["use_cache"] = False
        if not reference:
            return model(**model_kwargs, **kwargs)
        context = contextlib.nullcontext()
        target = ref_module if ref_module is not None else self.ref_model
        if (target is None or ref_module is not None) and self.ref_model is None and is_peft_model(self.model):
            unwrapped = self.accelerator.unwrap_model(self.model)
            context = use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
            target = self.model if target is None else target
        if target is None:
            raise RuntimeError("no reference model: pass ref_model, train an adapter or cache the reference")
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs), \
                context:
            return target(**model_kwargs, **kwargs)

    def per_token_logps(self, model, inputs, reference: bool = False, ref_module=None):
        """(per-token log-probs [N, T-1], shifted completion mask [N, T-1]) of the policy or the reference, one model
        call over all N = groups x B rows of the batch (2B; 3B for mdpo)."""
        completion_mask = inputs["completion_mask"]  # [N, T]
        shift_mask = completion_mask[..., 1:]  # [N, T-1]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = self._call(model, inputs, reference, ref_module, labels=labels, fused_lm_head=True)
        # Prompt-learning PEFT prepends virtual tokens to the outputs; keep the positions of the real tokens.
        return outputs.log_probs[:, -shift_mask.size(1):], shift_mask

    def logits(self, model, inputs, reference: bool = False, ref_module=None) -> torch.Tensor:
        """Full next-token logits [N, T, V] of the policy or the reference (halva's KL, povid's argmax tokens)."""
        width = inputs["input_ids"].shape[1]
        return self._call(model, inputs, reference, ref_module).logits[:, -width:]

    def log_terms(self, terms: dict[str, torch.Tensor]) -> None:
        """Per-step metrics, gathered over ranks and averaged like TRL's (`rewards/*`, `logps/*`, `loss/*`)."""
        mode = "train" if self.model.training else "eval"
        for key, value in terms.items():
            self._metrics[mode][key].append(self.accelerator.gather(value.detach().float()).mean().item())


def pair_logps(trainer: AlignDPOTrainer, model, inputs, weights: torch.Tensor | None = None, average: bool = False,
               groups: int = 2):
    """Sequence log-probs [B] of each row group of the policy, then of the reference: with 2 groups (policy chosen,
    policy rejected, reference chosen, reference rejected); with 3 (mdpo) the chosen-under-m' group follows each
    side's rejected one. One model call each for the policy and the reference, over all groups x B rows.

    Summed over the completion tokens, each token weighted by `weights` [N, T-1] when given (ddpo; `average`
    divides by the summed weights), unweighted otherwise (TRL's sum)."""
    logps = sequence_logps(trainer, model, inputs, weights, average)
    if logps.shape[0] % groups:
        raise ValueError(f"a batch of {logps.shape[0]} rows does not split into {groups} row groups")
    cached = CACHED_GROUPS[:groups]
    if all(name in inputs for name in cached):  # precompute_ref_log_probs: the reference values ride in the batch
        ref_groups = tuple(inputs[name].to(logps.dtype) for name in cached)
    else:
        ref_groups = sequence_logps(trainer, model, inputs, weights, average, reference=True).chunk(groups, dim=0)
    # [B] each: the batch is [chosen, rejected] (mdpo: [chosen, rejected, chosen under m'])
    return (*logps.chunk(groups, dim=0), *ref_groups)


# The cached reference values of the row groups, in the batch's group order.
CACHED_GROUPS = ("ref_chosen_logps", "ref_rejected_logps", "ref_corrupted_chosen_logps")


def sequence_logps(trainer: AlignDPOTrainer, model, inputs, weights: torch.Tensor | None = None,
                   average: bool = False, reference: bool = False, ref_module=None) -> torch.Tensor:
    """[N] summed completion log-probs of every row, each token weighted by `weights` [N, T-1] when given."""
    from align.losses import weighted_logps

    per_token, mask = trainer.per_token_logps(model, inputs, reference=reference, ref_module=ref_module)
    w = torch.ones((), dtype=per_token.dtype, device=per_token.device) if weights is None else weights
    return weighted_logps(per_token, mask, w.to(per_token.dtype), average=average)


def reference_values(trainer: AlignDPOTrainer, module, inputs) -> dict[str, torch.Tensor]:
    """The reference values a variant reads from the batch under `precompute_ref_log_probs`, [B] each, from one
    pass of the reference `module` over one batch (TRL's own `compute_ref_log_probs` for `dpo`)."""
    from align.train.dpo.variants import VARIANTS

    name = trainer.args.variant
    variant = VARIANTS[name]
    if variant.compute_loss is None:
        chosen, rejected = trainer.compute_ref_log_probs(module, inputs)
        return {"ref_chosen_logps": chosen, "ref_rejected_logps": rejected}
    if name == "povid":
        chosen, rejected, noisy = povid_logps(trainer, module, inputs, reference=True, ref_module=module)
        return {"ref_chosen_logps": chosen, "ref_rejected_logps": rejected, "ref_noisy_rejected_logps": noisy}
    weights = inputs["token_weights"][..., 1:] if variant.token_weights else None
    average = trainer.args.ddpo_average if variant.token_weights else False
    groups = 3 if variant.corrupted_chosen else 2
    with trainer.accelerator.autocast():
        logps = sequence_logps(trainer, module, inputs, weights, average, reference=True, ref_module=module)
    return dict(zip(CACHED_GROUPS[:groups], logps.chunk(groups, dim=0), strict=True))


def _finish(trainer: AlignDPOTrainer, name: str, out, chosen, rejected, return_outputs, **extra):
    """Log the DPO terms (TRL's names) plus `loss/<name>` and `extra`; the mean loss."""
    trainer.log_terms({
        f"loss/{name}": out.losses,
        "rewards/chosen": out.chosen_rewards,
        "rewards/rejected": out.rejected_rewards,
        "rewards/accuracies": (out.chosen_rewards > out.rejected_rewards).float(),
        "rewards/margins": out.chosen_rewards - out.rejected_rewards,
        "logps/chosen": chosen,
        "logps/rejected": rejected,
        **extra,
    })
    if return_outputs:
        raise NotImplementedError(f"{name} does not return logits (prediction_loss_only evaluation only)")
    return out.losses.mean()


def ddpo_compute_loss(trainer: AlignDPOTrainer, model, inputs, return_outputs=False):
    """RLHF-V DDPO: token-weighted sequence log-probs (gamma inside the spans) for policy and reference, then
    sigmoid DPO (`align.losses.dpo_loss`)."""
    from align.losses import dpo_loss

    weights = inputs["token_weights"][..., 1:]  # [2B, T-1], aligned with the shifted labels
    chosen, rejected, ref_chosen, ref_rejected = pair_logps(trainer, model, inputs, weights,
                                                            average=trainer.args.ddpo_average)
    out = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, trainer.beta)
    return _finish(trainer, "ddpo", out, chosen, rejected, return_outputs)


def hsa_compute_loss(trainer: AlignDPOTrainer, model, inputs, return_outputs=False):
    """HSA-DPO: summed log-probs, the rejected log-ratio scaled by each pair's `rejected_score` [B] (the chosen one
    by `chosen_score` [B] with hsa_use_chosen_score), `align.losses.hsa_dpo_loss`."""
    from align.losses import hsa_dpo_loss

    chosen, rejected, ref_chosen, ref_rejected = pair_logps(trainer, model, inputs)
    rejected_score = inputs["rejected_score"].to(chosen.dtype)  # [B]
    chosen_score = inputs["chosen_score"].to(chosen.dtype) if trainer.args.hsa_use_chosen_score else None  # [B]
    out = hsa_dpo_loss(chosen, rejected, ref_chosen, ref_rejected, trainer.beta, rejected_score, chosen_score)
    return _finish(trainer, "hsa", out, chosen, rejected, return_outputs, **{"hsa/rejected_score": rejected_score})


def stic_compute_loss(trainer: AlignDPOTrainer, model, inputs, return_outputs=False):
    """STIC stage 1: summed log-probs, sigmoid DPO minus stic_sft_coef x the policy's chosen log-prob
    (`align.losses.stic_loss`). The rejected log-prob is the label gather on the rejected tokens; STIC's code
    instead scores the top-1/top-2 non-label tokens (POVID's `_get_noisy_batch_logps`), which is not reproduced."""
    from align.losses import stic_loss

    chosen, rejected, ref_chosen, ref_rejected = pair_logps(trainer, model, inputs)
    out = stic_loss(chosen, rejected, ref_chosen, ref_rejected, trainer.beta, trainer.args.stic_sft_coef)
    return _finish(trainer, "stic", out, chosen, rejected, return_outputs,
                   **{"loss/stic_dpo": out.dpo_losses, "loss/stic_sft": out.sft_losses})


def mdpo_compute_loss(trainer: AlignDPOTrainer, model, inputs, return_outputs=False):
    """mDPO: summed log-probs of the 3B rows [chosen | rejected | chosen under m'] from one policy call and one
    reference call over the same batch (so both score the same m'), `align.losses.mdpo_loss`."""
    from align.losses import mdpo_loss

    chosen, rejected, corrupted, ref_chosen, ref_rejected, ref_corrupted = pair_logps(trainer, model, inputs,
                                                                                      groups=3)
    args = trainer.args
    out = mdpo_loss(chosen, rejected, corrupted, ref_chosen, ref_rejected, ref_corrupted, trainer.beta,
                    anchor=args.mdpo_anchor, dpo_weight=args.mdpo_dpo_weight,
                    conditional_weight=args.mdpo_conditional_weight, anchor_weight=args.mdpo_anchor_weight)
    return _finish(trainer, "mdpo", out, chosen, rejected, return_outputs, **{
        "loss/mdpo_dpo": out.dpo_losses, "loss/mdpo_conditional": out.conditional_losses,
        "loss/mdpo_anchor": out.anchor_losses, "rewards/corrupted_chosen": out.corrupted_chosen_rewards,
        "rewards/conditional_margins": out.chosen_rewards - out.corrupted_chosen_rewards,
        "logps/corrupted_chosen": corrupted,
    })


def halva_compute_loss(trainer: AlignDPOTrainer, model, inputs, return_outputs=False):
    """HALVA: phrase alignment (k-th correct phrase vs k-th hallucinated phrase, `align.losses.halva_alignment_loss`,
    mean over the batch's phrase pairs; no reference, no beta) + halva_alpha x the forward KL(reference || policy)
    on the batch's SFT samples (`kl_inputs`), summed over tokens and vocabulary, mean over samples."""
    from align.losses import forward_kl, halva_alignment_loss, phrase_logps

    per_token, mask = trainer.per_token_logps(model, inputs)  # [2B, T-1]
    phrase_ids = inputs["phrase_ids"][..., 1:] * mask  # [2B, T-1], aligned with the shifted labels
    chosen_tokens, rejected_tokens = per_token.chunk(2, dim=0)
    chosen_ids, rejected_ids = phrase_ids.chunk(2, dim=0)
    correct = phrase_logps(chosen_tokens, chosen_ids)  # [K]
    hallucinated = phrase_logps(rejected_tokens, rejected_ids)  # [K]
    align = halva_alignment_loss(correct, hallucinated)  # [K]
    loss = align.mean()
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
        "loss/halva_align": align.detach(),
        "loss/halva_kl": kl.detach(),
        "halva/phrase_margins": (correct - hallucinated).detach(),
        "halva/phrase_accuracies": (correct > hallucinated).float(),
        "halva/phrases": torch.tensor([float(correct.numel())], device=loss.device),
        "logps/chosen": sums[0],
        "logps/rejected": sums[1],
    })
    if return_outputs:
        raise NotImplementedError("halva does not return logits (prediction_loss_only evaluation only)")
    return loss


def povid_logps(trainer: AlignDPOTrainer, model, inputs, reference: bool = False, ref_module=None):
    """POVID stage 2's three [B] log-probs of one model (policy with grad, or reference): chosen and rejected
    (summed label log-probs under the clean image) and y_noise: at each completion position the argmax token of a
    teacher-forced forward on the chosen response with the noised image (`noisy_inputs`, no grad: argmax has none),
    scored under the same model's clean-image forward on the chosen response. Each model takes its own argmax
    tokens, as POVID's code does (its reference re-runs the whole procedure with the LoRA disabled).

    The clean forward returns full logits [2B, T, V] (it serves both the labels and the argmax tokens)."""
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


def _no_grad_logits(trainer: AlignDPOTrainer, model, inputs):
    from trl.models.utils import disable_gradient_checkpointing

    with disable_gradient_checkpointing(trainer.model, trainer.args.gradient_checkpointing_kwargs):
        return trainer.logits(model, inputs)


def povid_compute_loss(trainer: AlignDPOTrainer, model, inputs, return_outputs=False):
    """POVID stage 2: povid_text_weight x DPO(chosen, rejected) + povid_noise_weight x DPO(chosen, y_noise)
    (`align.losses.povid_loss`; y_noise from `povid_logps`)."""
    from align.losses import povid_loss

    chosen, rejected, noisy = povid_logps(trainer, model, inputs)
    if "ref_noisy_rejected_logps" in inputs:
        ref_chosen, ref_rejected, ref_noisy = (inputs[k].to(chosen.dtype) for k in (
            "ref_chosen_logps", "ref_rejected_logps", "ref_noisy_rejected_logps"))
    else:
        ref_chosen, ref_rejected, ref_noisy = povid_logps(trainer, model, inputs, reference=True)
    args = trainer.args
    out = povid_loss(chosen, rejected, noisy, ref_chosen, ref_rejected, ref_noisy, trainer.beta,
                     text_weight=args.povid_text_weight, noise_weight=args.povid_noise_weight)
    return _finish(trainer, "povid", out, chosen, rejected, return_outputs, **{
        "loss/povid_text": out.text_losses, "loss/povid_noise": out.noise_losses,
        "rewards/noisy_rejected": out.noisy_rejected_rewards,
        "rewards/noise_margins": out.chosen_rewards - out.noisy_rejected_rewards,
        "logps/noisy_rejected": noisy.detach(),
    })
