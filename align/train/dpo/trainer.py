"""`AlignDPOTrainer(DPOTrainer)`: TRL's DPO with align's batches, for every family, and the run's variant.

Overrides (each recorded in tests/unit/test_trl_seam.py):
- `__init__`: the logits-based LM head for families where TRL's fused one does not fit; the reference of a LoRA
  run is the adapter-disabled policy (TRL would add a copy of the adapter named "ref"); every model call takes a
  batch's shared layout (`layout=`, `align.models.layout_forward`); TRL sees `padding_free=False` (align's
  setting of that name is the collator's).
- `_prepare_dataset`: identity; align's collator tokenizes (the dataset holds only row indices).
- `_compute_loss`: the variant's `compute_loss` (TRL's own `_compute_loss` for `dpo`).
- `_precompute_ref_logps` (with `precompute_ref_log_probs`): the variant's `reference_values`, cached in a file
  keyed by the data's and the reference model's fingerprints (`align.train.dpo.ref_cache`), since TRL's own cache
  is keyed by the in-memory index dataset, which is the same for any data of the same length.

The variants (`align.train.dpo.variants`) call back `per_token_logps`, `logits` and `log_terms`.
"""

from __future__ import annotations

import contextlib

import torch
from trl import DPOTrainer

from align.train.dpo.data import model_inputs
from align.train.dpo.variants import get_variant
from align.train.guards import FiniteGuardMixin
from align.train.length_groups import LengthGroupsMixin
from align.train.resume import CheckpointResumeMixin

# What TRL's `_compute_loss` reads from the policy's fused-head output (its `__init__` asks for the same).
POLICY_OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")


class AlignDPOTrainer(FiniteGuardMixin, CheckpointResumeMixin, LengthGroupsMixin, DPOTrainer):
    """DPOTrainer with align's collator and the run's variant (`args.variant`); the loss maths lives in
    align.losses."""

    def __init__(self, *args, family: str, ref_cache=None, show_progress: bool = True, **kwargs):
        # Read by `_precompute_ref_logps`, which TRL's __init__ calls.
        self.family, self.ref_cache, self.ref_cache_status = family, ref_cache, None
        config = kwargs["args"] if "args" in kwargs else args[2]
        self.variant = get_variant(config.variant)
        self.show_progress = show_progress
        self._align_ready = False
        # align's `padding_free` (shared layouts, built by the collator) replaces TRL's field of that name, which
        # TRL's DPOTrainer would only warn about and switch off.
        padding_free, config.padding_free = config.padding_free, False
        try:
            super().__init__(*args, **kwargs)
        finally:
            config.padding_free = padding_free
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
        from align.models.layout_forward import add_layout_forward, share_vision_encoder
        from align.models.lm_head import add_logits_log_probs_head

        peft = isinstance(self.model, PeftModel)
        base = self.model.get_base_model() if peft else self.model
        if not get_family(self.family).fused_lm_head:
            # TRL patched `forward` with its fused head in __init__; replace it with the logits-based one.
            outputs = POLICY_OUTPUTS + (("log_sum_sq_probs",) if self.use_weighting else ())
            add_logits_log_probs_head(base, outputs=outputs)
            if self.ref_model is not None:
                add_logits_log_probs_head(self.accelerator.unwrap_model(self.ref_model), outputs=("log_probs",))
        # `layout=` runs a call in the batch's shared layout (align.models.layout_forward); without it, as before.
        models = [base] + ([self.accelerator.unwrap_model(self.ref_model)] if self.ref_model is not None else [])
        for target in models:
            add_layout_forward(target, self.family)
            share_vision_encoder(target, self.family)
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
        return self.variant.compute_loss(self, model, inputs, return_outputs)

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
                        part = self.variant.reference_values(self, module, batch)
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

    # ---- called by the variants ----

    def _call(self, model, inputs, reference: bool, ref_module=None, **kwargs):
        """One forward of the policy (`reference=False`, with grad) or of the reference (no grad): `ref_module` when
        given (the precompute pass), else the separate reference model, else the policy with its adapter off."""
        from accelerate.utils import is_peft_model
        from trl.models.utils import disable_gradient_checkpointing
        from trl.trainer.utils import use_adapter

        model_kwargs = model_inputs(inputs)
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

