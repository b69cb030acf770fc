"""`AlignGRPOTrainer(GRPOTrainer)`: TRL's GRPO for every align family that generates.

TRL keeps the data order (prompts repeated `num_generations` times, `RepeatSampler`), the buffer of one generation
batch cut into micro-batches, the loss (`_compute_loss`: every `loss_type`, GSPO's sequence-level importance
sampling, the clipped ratio, the KL term with beta > 0, entropy masks and bonuses) and its metrics. Overrides (each
recorded in tests/unit/test_trl_seam.py):

- `__init__`: TRL is built with beta 0 and align attaches its own reference (a frozen copy, or the
  adapter-disabled policy of a LoRA run), since TRL would reload the policy by its hub name; the families' log-prob
  heads where TRL's fused one does not fit; align's reward names and weights (the reward model's weight last).
- `_generate_and_score_completions`: align's encoder turns prompt rows into each family's inputs; completions are
  sampled, laid out flush-left (each row's positions start at 0, as when it was sampled: TRL scores left-padded
  prompts without position ids) and split per row (`align_rows`), so TRL's shuffling and splitting of the buffer
  carry every family's image fields with their rows; rewards go through align's checks (a function that raises,
  returns NaN or the wrong number of values stops the run with one line naming it); group advantages come from
  `align.losses.group_advantages`.
- `_get_per_token_logps_and_entropies`: the log-probs of the micro-batch's own rows (`align_rows`), mapped onto
  TRL's completion grid [B, C].
- `_compute_loss`: keeps the micro-batch for the call above, then TRL's loss.
- `_prepare_inputs`: a resumed run counts micro-steps from the restored optimizer step, as PPO does.
"""

from __future__ import annotations

import contextlib
import time

import torch
from trl import GRPOTrainer

from align.losses import group_advantages
from align.train.guards import FiniteGuardMixin
from align.train.resume import CheckpointResumeMixin
from align.train.rewards import call_reward_func, check_finite, reward_model_scores
from align.train.rollout import (
    eos_token_ids,
    pixel_placeholder_id,
    response_mask,
    rollout_seed,
    sampling_config,
    split_rows,
    stack_rows,
    token_keys,
    training_sequences,
)

ROWS = "align_rows"  # per-row model inputs of the flush-left sequences: list of B dicts of [1, ...] tensors
PROMPT_LENGTHS = "align_prompt_lengths"  # [B] each row's prompt tokens, where its completion starts


class AlignGRPOTrainer(FiniteGuardMixin, CheckpointResumeMixin, GRPOTrainer):
    """GRPOTrainer whose rollouts and log-probs go through align's encoders (every family), with align's rewards."""

    def __init__(self, model, args, train_dataset, prompts, encoder, processing_class, reward_funcs=(),
                 reward_model=None, ref_model=None, fact_captions=None, show_progress: bool = True):
        self.prompts, self.encoder, self.family = prompts, encoder, encoder.family
        self.align_reward_funcs = list(reward_funcs)  # (name, callable)
        self.reward_model, self.fact_captions = reward_model, fact_captions
        self.reward_prompt = reward_model.info.get("reward_prompt") if reward_model is not None else None
        names = [name for name, _ in self.align_reward_funcs] + (["reward_model"] if reward_model is not None else [])
        weights = list(args.reward_weights) if args.reward_weights is not None else [1.0] * len(self.align_reward_funcs)
        if reward_model is not None:
            weights.append(args.reward_model_weight)
        beta, args.beta = args.beta, 0.0  # TRL would load a reference by the policy's name; align brings its own
        user_weights, args.reward_weights = args.reward_weights, None
        try:
            with _image_token_id_for_trl(model):
                super().__init__(model=model, reward_funcs=[_named(n) for n in names], args=args,
                                 train_dataset=train_dataset, processing_class=processing_class)
        finally:
            args.beta, args.reward_weights = beta, user_weights
        self.beta = beta
        self.reward_func_names = names
        self.reward_weights = torch.tensor(weights, dtype=torch.float32)
        self.show_progress = show_progress
        self._align_heads()
        # The reference only where the KL term reads it; the reward model scores completions.
        self.ref_model = self._frozen(ref_model, log_probs=True) if beta != 0.0 and ref_model is not None else None
        self.reward_model = self._frozen(reward_model) if reward_model is not None else None
        tokenizer = self._tokenizer
        base = self._policy_base()
        self.eos_ids = eos_token_ids(base, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.placeholder_id = pixel_placeholder_id(base, self.family)
        extra = dict(args.generation_kwargs or {})
        if args.repetition_penalty != 1.0:
            extra["repetition_penalty"] = args.repetition_penalty
        if args.min_p is not None:
            extra["min_p"] = args.min_p
        self.generation_config = sampling_config(base, self.pad_id, self.eos_ids, args.max_completion_length,
                                                 args.temperature, args.top_p, args.top_k, **extra)
        self._align_batch: dict | None = None  # the micro-batch `_compute_loss` is scoring
        self._generations = 0
        self.reward_curve: list[float] = []  # mean weighted reward of each generation batch, over all ranks
        self.rollout_seconds: list[float] = []

    # ----------------------------------------------------------------------------------------------- setup

    def _policy_base(self):
        from align.models.freeze import is_peft_model

        model = self.accelerator.unwrap_model(self.model)
        return model.get_base_model() if is_peft_model(model) else model

    def _align_heads(self) -> None:
        """The log-prob head of the family (TRL patched its fused one onto every model) and one adapter."""
        from align.models.families import get_family
        from align.models.freeze import is_peft_model
        from align.models.lm_head import add_logits_log_probs_head

        model = self.accelerator.unwrap_model(self.model)
        base = self._policy_base()
        if not get_family(self.family).fused_lm_head:
            add_logits_log_probs_head(base, temperature=self.temperature, outputs=("log_probs", "entropy"))
        if is_peft_model(model):
            if "forward" in vars(model.base_model):  # PEFT's adaption-prompt wrapper copied the old forward
                model.base_model.forward = base.forward
            if "ref" in model.peft_config:  # the adapter-disabled policy is the reference: no copy named "ref"
                model.delete_adapter("ref")
                model.set_adapter("default")

    def _frozen(self, module, log_probs: bool = False):
        """A frozen model (reference, reward model), with the family's log-prob head where it is asked for, as a
        DeepSpeed inference engine (partitioned under ZeRO-3) or on the device."""
        from trl.models.utils import prepare_deepspeed
        from trl.trainer.utils import disable_dropout_in_model

        from align.models.lm_head import add_log_probs_head

        module.requires_grad_(False).eval()
        if self.args.disable_dropout:
            disable_dropout_in_model(module)
        if log_probs:
            add_log_probs_head(module, self.family, temperature=self.temperature)
        if self.is_deepspeed_enabled:
            return prepare_deepspeed(module, self.accelerator)
        return module.to(self.accelerator.device)

    # ------------------------------------------------------------------------------------------ data order

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["row"]

    def _prepare_inputs(self, generation_batch):
        if not self.model.training:
            raise RuntimeError("align grpo has no evaluation loop; evaluate the saved policy with `align eval`")
        if self._buffered_inputs is None:  # the first step, also of a resumed run: count from the restored step
            self._step = self.state.global_step * self.args.gradient_accumulation_steps
        return super()._prepare_inputs(generation_batch)

    # ------------------------------------------------------------------------------------------- rollouts

    @torch.no_grad()
    def _generate_and_score_completions(self, inputs: list[dict]) -> dict:
        from trl.models.utils import disable_gradient_checkpointing

        from align.train.prompts import check_batch_prompt_length

        started = time.perf_counter()
        args, device = self.args, self.accelerator.device
        rows = [int(x["row"]) for x in inputs]
        examples = [self.prompts.load(r) for r in rows]
        prompt = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                  for k, v in dict(self.encoder.encode(examples, add_generation_prompt=True)).items()}
        check_batch_prompt_length(prompt["attention_mask"], rows, self.prompts, args.max_prompt_length)
        completion_ids = self._sample(prompt)  # [B, C]
        completion_mask, has_eos = response_mask(completion_ids, self.eos_ids)  # [B, C], [B]
        if args.mask_truncated_completions:
            completion_mask = completion_mask * has_eos.unsqueeze(1).to(completion_mask.dtype)
        batch = training_sequences(prompt, completion_ids, completion_mask, self.pad_id)
        n = len(rows)
        per_row = split_rows({k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}, n,
                             [len(e.images) for e in examples], placeholder_id=self.placeholder_id)
        prompt_lengths = prompt["attention_mask"].sum(dim=1)  # [B]
        output = {
            "prompt_ids": prompt["input_ids"], "prompt_mask": prompt["attention_mask"],
            "completion_ids": completion_ids, "completion_mask": completion_mask,
            ROWS: per_row, PROMPT_LENGTHS: prompt_lengths,
        }
        output["num_items_in_batch"] = self.accelerator.gather(completion_mask.sum()).sum()
        with disable_gradient_checkpointing(self.model, args.gradient_checkpointing_kwargs):
            generate_every = args.steps_per_generation * self.num_iterations
            if args.gradient_accumulation_steps % generate_every != 0:  # TRL's rule: the update lags the sampler
                output["old_per_token_logps"] = self._completion_logps(self.model, output)[0]
            if self.beta != 0.0:
                output["ref_per_token_logps"] = self._reference_logps(output)
        texts = self._tokenizer.batch_decode(completion_ids.masked_fill(completion_mask == 0, self.pad_id),
                                             skip_special_tokens=True)
        rewards_per_func = self._rewards(rows, examples, texts, completion_ids, completion_mask)  # [B, F]
        everyone = self.accelerator.gather(rewards_per_func)  # [N, F]: groups may span ranks
        scored = group_advantages(everyone, self.reward_weights.to(device), self.num_generations, self.scale_rewards,
                                  self.multi_objective_aggregation)
        start = self.accelerator.process_index * n
        output["advantages"] = scored.advantages[start:start + n]
        self._log_generation(everyone, scored, completion_mask, has_eos, examples, texts)
        self.rollout_seconds.append(time.perf_counter() - started)
        self._generations += 1
        return output

    def _sample(self, prompt: dict) -> torch.Tensor:
        from trl.models.utils import unwrap_model_for_generation

        torch.manual_seed(rollout_seed(self.args.seed, self.state.global_step, self.accelerator.process_index))
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                         gather_deepspeed3_params=self.args.ds3_gather_for_generation) as unwrapped:
            was_training = unwrapped.training
            unwrapped.eval()
            generated = unwrapped.generate(**prompt, generation_config=self.generation_config)
            unwrapped.train(was_training)
        return generated[:, prompt["input_ids"].shape[1]:]

    def _rewards(self, rows, examples, texts, completion_ids, completion_mask) -> torch.Tensor:
        """[B, F] rewards of this rank's completions: each reward function, then the reward model."""
        device = self.accelerator.device
        columns = self.prompts.columns(rows)
        prompts = [e.messages for e in examples]
        ids = [c[m.bool()].tolist() for c, m in zip(completion_ids, completion_mask, strict=True)]
        extra = {"completion_ids": ids, "trainer_state": self.state, "log_extra": self._log_completion_extra,
                 "log_metric": self._log_metric}
        out = [torch.tensor(call_reward_func(name, func, prompts, texts, columns, self._generations, **extra),
                            dtype=torch.float32, device=device)
               for name, func in self.align_reward_funcs]
        if self.reward_model is not None:
            scores = reward_model_scores(self.reward_model, self.encoder, self.prompts, rows, examples, texts,
                                         self.reward_prompt, self.fact_captions, self.args.seed,
                                         self.args.per_device_train_batch_size, device)
            check_finite("the reward model", scores.tolist(), self._generations)
            out.append(scores.to(device))
        return torch.stack(out, dim=1)

    def _log_generation(self, everyone, scored, completion_mask, has_eos, examples, texts) -> None:
        metrics = self._metrics["train"]
        for i, name in enumerate(self.reward_func_names):
            metrics[f"rewards/{name}/mean"].append(torch.nanmean(everyone[:, i]).item())
            metrics[f"rewards/{name}/std"].append(_std(everyone[:, i]))
        metrics["reward"].append(torch.nanmean(scored.rewards).item())
        metrics["reward_std"].append(_std(scored.rewards))
        metrics["frac_reward_zero_std"].append(scored.zero_std.float().mean().item())
        lengths = self.accelerator.gather(completion_mask.sum(dim=1).float())
        metrics["completions/mean_length"].append(lengths.mean().item())
        metrics["completions/min_length"].append(lengths.min().item())
        metrics["completions/max_length"].append(lengths.max().item())
        metrics["completions/clipped_ratio"].append(self.accelerator.gather((~has_eos).float()).mean().item())
        self.reward_curve.append(torch.nanmean(scored.rewards).item())
        if self.log_completions:
            from accelerate.utils import gather_object

            self._logs["prompt"].extend(gather_object([e.messages for e in examples]))
            self._logs["completion"].extend(gather_object(texts))
            for i, name in enumerate(self.reward_func_names):
                self._logs["rewards"][name].extend(everyone[:, i].tolist())
            self._logs["advantages"].extend(scored.advantages.tolist())

    # ---------------------------------------------------------------------------------------- log-probs

    def _reference_logps(self, batch: dict) -> torch.Tensor:
        if self.ref_model is not None:
            return self._completion_logps(self.ref_model, batch)[0]
        from trl.trainer.utils import use_adapter

        from align.models.freeze import is_peft_model

        unwrapped = self.accelerator.unwrap_model(self.model)
        if not is_peft_model(unwrapped):
            raise RuntimeError("beta > 0 with a fully trained policy needs a separate reference model")
        with use_adapter(unwrapped, adapter_name=None):
            return self._completion_logps(self.model, batch)[0]

    def _completion_logps(self, model, batch: dict, compute_entropy: bool = False):
        """(log-probs [B, C], entropies [B, C] or None) of the batch's completion tokens under `model`, from its
        flush-left rows, `per_device_train_batch_size` rows per call."""
        rows, lengths = batch[ROWS], batch[PROMPT_LENGTHS]
        width = batch["completion_ids"].shape[1]
        size = self.args.per_device_train_batch_size
        logps, entropies = [], []
        for start in range(0, len(rows), size):
            chunk = stack_rows(rows[start:start + size], self.pad_id, token_keys(rows[start], 1))
            labels = chunk["input_ids"].masked_fill(chunk.pop("action_mask") == 0, -100)
            with self.accelerator.autocast():
                out = model(**chunk, labels=labels, fused_lm_head=True, use_cache=False)
            # Column t of the shifted grid predicts token t + 1: completion token j of a row whose prompt has p
            # tokens sits at p + j, so its log-prob is at column p + j - 1.
            index = (lengths[start:start + size].unsqueeze(1) - 1
                     + torch.arange(width, device=labels.device).unsqueeze(0))  # [b, C]
            index = index.clamp(max=out.log_probs.shape[1] - 1)
            logps.append(out.log_probs.gather(1, index))
            if compute_entropy:
                entropies.append(out.entropy.gather(1, index))
        mask = batch["completion_mask"].to(logps[0].dtype)
        return torch.cat(logps) * mask, (torch.cat(entropies) * mask if compute_entropy else None)

    def _compute_loss(self, model, inputs):
        self._align_batch = inputs
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._align_batch = None

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **_):
        if self._align_batch is None:
            raise RuntimeError("align's GRPO scores only the micro-batches of its own generation batches")
        logps, entropies = self._completion_logps(model, self._align_batch, compute_entropy)
        return logps, entropies, None


def _std(values: torch.Tensor) -> float:
    kept = values[~torch.isnan(values)]
    return kept.std().item() if kept.numel() > 1 else 0.0


def _named(name: str):
    """A stand-in TRL lists under `name` (align calls the real reward functions itself, with its checks)."""

    def reward(**_):
        raise RuntimeError(f"align calls reward '{name}' itself")

    reward.__name__ = name
    return reward


@contextlib.contextmanager
def _image_token_id_for_trl(model):
    """TRL's __init__ reads `model.config.image_token_id` for its generation config, which Idefics and Kosmos-2
    configs lack; align builds its own generation config, so a None there for the duration is harmless."""
    config = model.config
    missing = not hasattr(config, "image_token_id")
    if missing:
        config.image_token_id = None
    try:
        yield
    finally:
        if missing:
            del config.image_token_id
