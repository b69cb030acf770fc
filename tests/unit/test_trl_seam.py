"""The seam with TRL and transformers: every method align's DPO, reward and PPO trainers override or call keeps the
shape align was written for.

When TRL is upgraded and this fails, read the new TRL code for the method named, adapt align/train/dpo/, and only
then update the recorded signature here (docs/contributing.md: few overrides, pinned TRL, a seam test).
"""

from __future__ import annotations

import inspect

import pytest

pytest.importorskip("trl")


def _shape(fn) -> str:
    """Parameter names, kinds and defaults; annotations are left out (they name other libraries' classes)."""
    parts = []
    for p in inspect.signature(fn).parameters.values():
        text = ("*" if p.kind is p.VAR_POSITIONAL else "**" if p.kind is p.VAR_KEYWORD else "") + p.name
        if p.kind is p.KEYWORD_ONLY:
            text = "kw:" + text
        if p.default is not p.empty:
            text += f"={p.default!r}"
        parts.append(text)
    return "(" + ", ".join(parts) + ")"


def _recorded():
    from trl import DPOTrainer
    from trl.models import prepare_deepspeed
    from trl.models.utils import disable_gradient_checkpointing
    from trl.trainer.utils import use_adapter

    return {
        # overridden by AlignDPOTrainer
        "DPOTrainer.__init__": (DPOTrainer.__init__,
                                "(self, model, ref_model=None, args=None, data_collator=None, train_dataset=None, "
                                "eval_dataset=None, processing_class=None, compute_metrics=None, callbacks=None, "
                                "optimizers=(None, None), quantization_config=None, peft_config=None)"),
        "DPOTrainer._prepare_dataset": (DPOTrainer._prepare_dataset,
                                        "(self, dataset, processing_class, args, dataset_name)"),
        "DPOTrainer._compute_loss": (DPOTrainer._compute_loss, "(self, model, inputs, return_outputs)"),
        "DPOTrainer._precompute_ref_logps": (DPOTrainer._precompute_ref_logps, "(self, dataset, name, batch_size)"),
        # called by align (compute_loss -> _compute_loss; ddpo's reference forward)
        "DPOTrainer.compute_loss": (DPOTrainer.compute_loss,
                                    "(self, model, inputs, return_outputs=False, num_items_in_batch=None)"),
        "DPOTrainer.compute_ref_log_probs": (DPOTrainer.compute_ref_log_probs, "(self, model, inputs)"),
        "prepare_deepspeed": (prepare_deepspeed, "(model, accelerator)"),
        "use_adapter": (use_adapter, "(model, adapter_name)"),
        "disable_gradient_checkpointing": (disable_gradient_checkpointing,
                                           "(model, gradient_checkpointing_kwargs=None)"),
    }


def _recorded_rl():
    """What align/train/reward/ and align/train/ppo/ override on transformers' Trainer or call in TRL."""
    from transformers import Trainer
    from trl.models.utils import unwrap_model_for_generation
    from trl.trainer.utils import RepeatSampler, disable_dropout_in_model

    return {
        "Trainer._get_dataloader": (Trainer._get_dataloader, "(self, dataset, description, batch_size, "
                                                             "sampler_fn=None, is_training=False, dataloader_key=None)"),
        "Trainer._get_train_sampler": (Trainer._get_train_sampler, "(self, train_dataset=None)"),
        "Trainer._prepare_inputs": (Trainer._prepare_inputs, "(self, inputs)"),
        "Trainer.training_step": (Trainer.training_step, "(self, model, inputs, num_items_in_batch=None)"),
        "Trainer.compute_loss": (Trainer.compute_loss,
                                 "(self, model, inputs, return_outputs=False, num_items_in_batch=None)"),
        "Trainer.prediction_step": (Trainer.prediction_step,
                                    "(self, model, inputs, prediction_loss_only, ignore_keys=None)"),
        "Trainer.log": (Trainer.log, "(self, logs, start_time=None)"),
        "Trainer._save": (Trainer._save, "(self, output_dir=None, state_dict=None)"),
        "Trainer._load_from_checkpoint": (Trainer._load_from_checkpoint, "(self, resume_from_checkpoint, model=None)"),
        "RepeatSampler.__init__": (RepeatSampler.__init__, "(self, data_source, mini_repeat_count, batch_size=1, "
                                                           "repeat_count=1, shuffle=True, seed=None)"),
        "unwrap_model_for_generation": (unwrap_model_for_generation,
                                        "(model, accelerator, gather_deepspeed3_params=True, generation_kwargs=None, "
                                        "gradient_checkpointing_kwargs=None)"),
        "disable_dropout_in_model": (disable_dropout_in_model, "(model)"),
    }


@pytest.mark.parametrize("name", list(_recorded()))
def test_signature_unchanged(name):
    fn, recorded = _recorded()[name]
    assert _shape(fn) == recorded, f"TRL changed {name}; see this module's docstring"


@pytest.mark.parametrize("name", list(_recorded_rl()))
def test_rl_signature_unchanged(name):
    fn, recorded = _recorded_rl()[name]
    assert _shape(fn) == recorded, f"{name} changed; see this module's docstring"


def test_dpo_batch_contract_unchanged():
    """The batch keys and layout align's PreferenceCollator emits are the ones TRL's loss reads; the attributes
    the ddpo loss reads exist."""
    from trl import DPOTrainer

    loss_src = inspect.getsource(DPOTrainer._compute_loss)
    for needle in ('inputs["completion_mask"]', 'inputs["input_ids"].masked_fill(completion_mask == 0, -100)',
                   "fused_lm_head=True", "logps.chunk(2, dim=0)  # batch is [chosen, rejected]",
                   '_non_model_keys = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps"}',
                   "outputs.mean_logits", "outputs.entropy", "outputs.is_top1"):
        assert needle in loss_src, f"DPOTrainer._compute_loss no longer has {needle!r}"
    init_src = inspect.getsource(DPOTrainer.__init__)
    for needle in ('outputs = ("log_probs", "entropy", "mean_logits", "is_top1")', "self._metrics = ",
                   "self.beta = ", "self.use_weighting = ", 'model.add_adapter("ref", default_config)',
                   "skip_prepare_dataset = "):
        assert needle in init_src, f"DPOTrainer.__init__ no longer has {needle!r}"
    # precompute_ref_log_probs: TRL hashes the reference (read as the cache key's model part) and then calls the
    # overridden _precompute_ref_logps from __init__, with no reference model kept for full fine-tuning
    for needle in ("self._precompute_model_hash = (", "hash_module(self.ref_model or self.model)",
                   "self.train_dataset = self._precompute_ref_logps(", "self._precompute_engine = None",
                   "(args.precompute_ref_log_probs and not self.is_fsdp_enabled)"):
        assert needle in init_src, f"DPOTrainer.__init__ no longer has {needle!r}"
    assert 'inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]' in loss_src


def test_loss_types_are_trls():
    """align checks loss_type against its own copy of TRL's list at config time; the list TRL's trainer names when
    it refuses an unknown one must be the same."""
    import inspect
    import re

    from trl.trainer import dpo_trainer

    from align.train.dpo.settings import TRL_LOSS_TYPES

    source = inspect.getsource(dpo_trainer)
    listed = re.search(r"Unknown loss type: \{loss_type\}\. Should be one of \[(.*?)\]", source, re.S).group(1)
    assert tuple(re.findall(r"'(\w+)'", listed)) == TRL_LOSS_TYPES


def _recorded_grpo():
    """What AlignGRPOTrainer overrides on TRL's GRPOTrainer or relies on it to call."""
    from trl import GRPOTrainer

    return {
        "GRPOTrainer.__init__": (GRPOTrainer.__init__,
                                 "(self, model, reward_funcs=None, args=None, train_dataset=None, eval_dataset=None, "
                                 "processing_class=None, reward_processing_classes=None, callbacks=None, "
                                 "optimizers=(None, None), quantization_config=None, peft_config=None, tools=None, "
                                 "rollout_func=None, environment_factory=None)"),
        "GRPOTrainer._generate_and_score_completions": (GRPOTrainer._generate_and_score_completions,
                                                        "(self, inputs)"),
        "GRPOTrainer._get_per_token_logps_and_entropies": (
            GRPOTrainer._get_per_token_logps_and_entropies,
            "(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False, "
            "compute_aux_loss=False, pixel_values=None, image_grid_thw=None, num_images=None, "
            "pixel_attention_mask=None, spatial_shapes=None, num_tiles=None, image_sizes=None, token_type_ids=None, "
            "mm_token_type_ids=None, image_position_ids=None)"),
        "GRPOTrainer._compute_loss": (GRPOTrainer._compute_loss, "(self, model, inputs)"),
        "GRPOTrainer._prepare_inputs": (GRPOTrainer._prepare_inputs, "(self, generation_batch)"),
        "GRPOTrainer._set_signature_columns_if_needed": (GRPOTrainer._set_signature_columns_if_needed, "(self)"),
        "GRPOTrainer._log_completion_extra": (GRPOTrainer._log_completion_extra, "(self, column, values)"),
        "GRPOTrainer._log_metric": (GRPOTrainer._log_metric, "(self, name, value)"),
    }


@pytest.mark.parametrize("name", list(_recorded_grpo()))
def test_grpo_signature_unchanged(name):
    fn, recorded = _recorded_grpo()[name]
    assert _shape(fn) == recorded, f"TRL changed {name}; see this module's docstring"


def test_grpo_batch_contract_unchanged():
    """What align's generation batch must hold is what TRL's loss and buffer read; the attributes align sets after
    TRL's __init__ are the ones its loss reads."""
    from trl import GRPOTrainer

    loss = inspect.getsource(GRPOTrainer._compute_loss)
    for needle in ('inputs["prompt_ids"], inputs["prompt_mask"]', 'inputs["completion_ids"], inputs["completion_mask"]',
                   "per_token_logps, entropies, aux_loss = self._get_per_token_logps_and_entropies(",
                   'advantages = inputs["advantages"]', 'old_per_token_logps = inputs.get("old_per_token_logps")',
                   'ref_per_token_logps = inputs["ref_per_token_logps"]', 'inputs["num_items_in_batch"]',
                   "if self.beta != 0.0:"):
        assert needle in loss, f"GRPOTrainer._compute_loss no longer has {needle!r}"
    prepare = inspect.getsource(GRPOTrainer._prepare_inputs)
    for needle in ("generation_batch = self._generate_and_score_completions(generation_batch)",
                   "generation_batch = shuffle_sequence_dict(generation_batch)",
                   "split_tensor_dict(generation_batch, self.args.steps_per_generation)",
                   "if self._step % generate_every == 0 or self._buffered_inputs is None:"):
        assert needle in prepare, f"GRPOTrainer._prepare_inputs no longer has {needle!r}"
    init = inspect.getsource(GRPOTrainer.__init__)
    for needle in ("self.reward_weights = torch.", "self.beta = args.beta", "self.ref_model = None",
                   'generation_kwargs["suppress_tokens"] = [model.config.image_token_id]',
                   'model.add_adapter("ref", default_config)', "self._metrics = {"):
        assert needle in init, f"GRPOTrainer.__init__ no longer has {needle!r}"
