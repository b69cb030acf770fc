"""`AlignPPOTrainer(Trainer)`: PPO with a critic for any supported VLM (LLaVA-RLHF's algorithm).

TRL 1.16 has no PPOTrainer; this one takes TRL's online-RL layout (RLOOTrainer's): the train dataloader yields a
rollout batch of prompts repeated once per minibatch step, `_prepare_inputs` samples and scores a rollout on the
first of them and hands out shuffled minibatches after, through TRL's `RepeatSampler`,
`unwrap_model_for_generation` (parameters gathered under ZeRO-3) and fused log-prob head. The trained module is
an `ActorCritic` (policy + critic, LLaVA-RLHF's layout), so one optimizer and one DeepSpeed engine carry both.

Per rollout (`_rollout`): generate -> policy, reference and critic passes -> terminal score (reward model,
reward functions, length, correctness, no-EOS penalty) -> per-token KL shaping -> GAE -> whitened advantages.
Per minibatch (`compute_loss`): clipped policy loss + vf_coef x clipped value loss.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict

import torch
from torch import nn
from transformers import Trainer

from align.losses import gae, kl_penalty, masked_mean, ppo_policy_loss, ppo_value_loss, shaped_rewards, whiten
from align.models.freeze import is_peft_model
from align.train.guards import FiniteGuardMixin
from align.train.ppo.rewards import correctness_bonus
from align.train.prompts import check_batch_prompt_length
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

GRID_KEYS = ("old_logprobs", "old_values", "advantages", "returns")  # [B, L-1] on the shifted grid
NON_MODEL_KEYS = ("action_mask", *GRID_KEYS)


class ActorCritic(nn.Module):
    """The trained module: `forward(**inputs, labels=...)` -> (policy's fused-head output, critic values [B, T])."""

    # compute_loss returns a mean, so Trainer must divide it over gradient-accumulation steps (a forward with
    # **kwargs would otherwise read as normalising by num_items_in_batch itself).
    accepts_loss_kwargs = False

    def __init__(self, policy, critic):
        super().__init__()
        self.policy = policy
        self.critic = critic

    @property
    def config(self):
        return self.policy.config

    def forward(self, labels=None, **inputs):
        policy_out = self.policy(**inputs, labels=labels, fused_lm_head=True, use_cache=False)
        return policy_out, self.critic(**inputs)

    @property
    def is_gradient_checkpointing(self) -> bool:
        name = "is_activation_checkpointing" if hasattr(self.policy, "is_activation_checkpointing") \
            else "is_gradient_checkpointing"
        return bool(getattr(self.policy, name, False))

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
        for part in (self.policy, self.critic.backbone):
            part.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gradient_checkpointing_kwargs)

    def gradient_checkpointing_disable(self):
        for part in (self.policy, self.critic.backbone):
            part.gradient_checkpointing_disable()


class AlignPPOTrainer(FiniteGuardMixin, Trainer):
    def __init__(self, model: ActorCritic, args, train_dataset, prompts, encoder, processing_class,
                 reward_model=None, reward_funcs=(), reward_weights=None, ref_model=None, fact_captions=None):
        from trl.trainer.utils import disable_dropout_in_model

        from align.models.lm_head import add_log_probs_head

        super().__init__(model=model, args=args, train_dataset=train_dataset, data_collator=_identity,
                         processing_class=processing_class)
        self.prompts, self.encoder = prompts, encoder
        self.tokenizer = getattr(processing_class, "tokenizer", processing_class)
        self.reward_model, self.reward_funcs = reward_model, list(reward_funcs)
        # the prompt the reward model was trained with, read before DeepSpeed wraps the model
        self.reward_prompt = reward_model.info.get("reward_prompt") if reward_model is not None else None
        self.reward_weights = list(reward_weights) if reward_weights is not None else [1.0] * len(self.reward_funcs)
        self.fact_captions = fact_captions
        self.ref_model = ref_model
        for module in (model, ref_model, reward_model):
            if module is not None:
                disable_dropout_in_model(module)  # the rollout's log-probs must be the ones the update sees
        policy = self.accelerator.unwrap_model(model).policy
        policy_base = policy.get_base_model() if is_peft_model(policy) else policy
        add_log_probs_head(policy_base, encoder.family, temperature=args.temperature, outputs=("log_probs", "entropy"))
        if ref_model is not None:
            add_log_probs_head(ref_model, encoder.family, temperature=args.temperature)
        self._prepare_frozen()
        self.eos_ids = eos_token_ids(policy_base, self.tokenizer)
        pad_id = self.tokenizer.pad_token_id
        self.pad_id = pad_id if pad_id is not None else self.eos_ids[0]
        self.placeholder_id = pixel_placeholder_id(policy_base, encoder.family)
        self.generation_config = sampling_config(policy_base, self.pad_id, self.eos_ids, args.max_new_tokens,
                                                 args.temperature, args.top_p)
        self._step = 0  # minibatch steps taken (training_step calls)
        self._rollouts = 0
        self._buffer: list[dict] | None = None
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self.reward_curve: list[float] = []  # mean task score of each rollout batch, over all ranks
        self.rollout_seconds: list[float] = []

    # ------------------------------------------------------------------------ data order (TRL's RLOO layout)

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["row"]

    def get_train_dataloader(self):
        return self._get_dataloader(dataset=self.train_dataset, description="Training",
                                    batch_size=self.args.rollout_batch_size, sampler_fn=self._get_train_sampler,
                                    is_training=True)

    def _get_train_sampler(self, train_dataset=None):
        from trl.trainer.utils import RepeatSampler

        # One rollout batch of prompts over all ranks, repeated once per minibatch step it feeds.
        return RepeatSampler(train_dataset if train_dataset is not None else self.train_dataset, mini_repeat_count=1,
                             batch_size=self.args.rollout_batch_size * self.accelerator.num_processes,
                             repeat_count=self.args.steps_per_rollout, shuffle=True, seed=self.args.seed)

    def training_step(self, model, inputs, num_items_in_batch=None):
        out = super().training_step(model, inputs, num_items_in_batch)
        self._step += 1
        return out

    def _prepare_inputs(self, inputs):
        if not self.model.training:
            raise RuntimeError("align ppo has no evaluation loop; evaluate the saved policy with `align eval`")
        steps = self.args.steps_per_rollout
        if self._buffer is None:  # the first step, also of a resumed run: count from the restored step
            self._step = self.state.global_step * self.args.gradient_accumulation_steps
        if self._step % steps == 0 or self._buffer is None:
            self._buffer = self._rollout([int(row["row"]) for row in inputs])
        return self._buffer[self._step % steps]

    # ------------------------------------------------------------------------------------------- rollout

    def _prepare_frozen(self) -> None:
        """Reference and reward model: DeepSpeed inference engines (partitioned under ZeRO-3) or moved to the
        device."""
        from trl.models.utils import prepare_deepspeed

        for name in ("ref_model", "reward_model"):
            module = getattr(self, name)
            if module is None:
                continue
            module.requires_grad_(False).eval()
            if self.is_deepspeed_enabled:
                setattr(self, name, prepare_deepspeed(module, self.accelerator))
            else:
                setattr(self, name, module.to(self.accelerator.device))

    @torch.no_grad()
    def _rollout(self, rows: list[int]) -> list[dict]:
        started = time.perf_counter()
        args = self.args
        device = self.accelerator.device
        examples = [self.prompts.load(r) for r in rows]
        prompt = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                  for k, v in dict(self.encoder.encode(examples, add_generation_prompt=True)).items()}
        check_batch_prompt_length(prompt["attention_mask"], rows, self.prompts, args.max_prompt_length)
        completion_ids = self._generate(prompt)  # [B, C]
        completion_mask, has_eos = response_mask(completion_ids, self.eos_ids)
        batch = training_sequences(prompt, completion_ids, completion_mask, self.pad_id)
        action_mask = batch["action_mask"][:, 1:]  # [B, L-1] on the shifted grid
        images_per_row = [len(e.images) for e in examples]
        logprobs, values, ref_logprobs = self._score_tokens(batch, images_per_row)
        texts = self.tokenizer.batch_decode(completion_ids.masked_fill(completion_mask == 0, self.pad_id),
                                            skip_special_tokens=True)
        lengths = completion_mask.sum(dim=1)  # [B] response tokens, EOS included
        score, parts = self._terminal_score(rows, examples, texts, lengths, has_eos)  # [B]
        kl = kl_penalty(logprobs, ref_logprobs, args.kl_estimator) * action_mask  # [B, L-1]
        rewards = shaped_rewards(kl, score, action_mask, args.kl_coef, args.reward_scale)  # [B, L-1]
        if args.whiten_rewards:
            rewards = whiten(rewards, action_mask, shift_mean=False, moments=self._global_moments(rewards, action_mask))
        advantages, returns = gae(rewards, values, action_mask, args.gamma, args.lam)
        if args.whiten_advantages:
            advantages = whiten(advantages, action_mask, moments=self._global_moments(advantages, action_mask))
        self._log_rollout(parts, score, kl, values, returns, action_mask, lengths, has_eos, logprobs)
        self.rollout_seconds.append(time.perf_counter() - started)
        self._rollouts += 1
        batch.update(old_logprobs=logprobs, old_values=values, advantages=advantages, returns=returns)
        return self._minibatches(batch, images_per_row)

    def _generate(self, prompt: dict) -> torch.Tensor:
        from trl.models.utils import unwrap_model_for_generation

        torch.manual_seed(rollout_seed(self.args.seed, self.state.global_step, self.accelerator.process_index))
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                         gather_deepspeed3_params=True) as unwrapped:
            policy = unwrapped.policy
            was_training = policy.training
            policy.eval()
            generated = policy.generate(**prompt, generation_config=self.generation_config)
            policy.train(was_training)
        return generated[:, prompt["input_ids"].shape[1]:]

    def _score_tokens(self, batch: dict, images_per_row: list[int]) -> tuple[torch.Tensor, ...]:
        """(policy log-probs, critic values, reference log-probs), each [B, L-1], in minibatch-sized chunks."""
        n = batch["input_ids"].shape[0]
        rows = split_rows({k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}, n, images_per_row,
                          placeholder_id=self.placeholder_id)
        keys = token_keys(batch, n)
        size = self.args.per_device_train_batch_size
        out_lp, out_v, out_ref = [], [], []
        for start in range(0, n, size):
            chunk = stack_rows(rows[start:start + size], self.pad_id, keys)
            chunk_labels = chunk["input_ids"].masked_fill(chunk["action_mask"] == 0, -100)
            chunk = {k: v for k, v in chunk.items() if k not in NON_MODEL_KEYS}
            policy_out, values = self.model(**chunk, labels=chunk_labels)
            out_lp.append(policy_out.log_probs)
            out_v.append(values[:, :-1])
            out_ref.append(self._reference_logprobs(chunk, chunk_labels))
        mask = batch["action_mask"][:, 1:].to(out_lp[0].dtype)
        return (torch.cat(out_lp) * mask, torch.cat(out_v).float() * mask, torch.cat(out_ref) * mask)

    def _reference_logprobs(self, inputs: dict, labels: torch.Tensor) -> torch.Tensor:
        if self.ref_model is not None:
            return self.ref_model(**inputs, labels=labels, fused_lm_head=True, use_cache=False).log_probs
        policy = self.accelerator.unwrap_model(self.model).policy
        if not is_peft_model(policy):
            raise RuntimeError("a fully trained policy needs a separate reference model")
        with policy.disable_adapter():
            return policy(**inputs, labels=labels, fused_lm_head=True, use_cache=False).log_probs

    def _terminal_score(self, rows, examples, texts, lengths, has_eos) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """[B] score at each response's last token, and its parts (for the log): the weighted reward model and
        reward functions ("task"), the length term, the correctness bonus and the no-EOS penalty."""
        args = self.args
        device = lengths.device
        batch_no = self._rollouts
        task = torch.zeros(len(rows), device=device)
        parts: dict[str, torch.Tensor] = {}
        if self.reward_model is not None:
            rm = self._reward_model_scores(rows, examples, texts).to(device)
            check_finite("the reward model", rm.tolist(), batch_no)
            parts["rewards/reward_model"] = rm
            task = task + args.reward_model_weight * rm
        columns = self.prompts.columns(rows)
        prompts = [e.messages for e in examples]
        for (name, func), weight in zip(self.reward_funcs, self.reward_weights, strict=True):
            values = torch.tensor(call_reward_func(name, func, prompts, texts, columns, batch_no), device=device)
            parts[f"rewards/{name}"] = values
            task = task + weight * values
        parts["rewards/task"] = task
        score = task.clone()
        if args.length_bonus_score:
            budget = args.length_budget or args.max_new_tokens
            length_term = args.length_bonus_score * lengths.float() / budget
            parts["rewards/length"] = length_term
            score = score + length_term
        if args.correct_bonus_score and "caption_type" in columns:
            bonus = torch.tensor([correctness_bonus(t, c) for t, c in zip(texts, columns["caption_type"], strict=True)],
                                 device=device)
            parts["rewards/correct_bonus"] = bonus
            score = score + args.correct_bonus_score * bonus
        if args.penalty_reward_value:
            score = score + args.penalty_reward_value * (~has_eos).float()
        return score, parts

    def _reward_model_scores(self, rows, examples, texts) -> torch.Tensor:
        return reward_model_scores(self.reward_model, self.encoder, self.prompts, rows, examples, texts,
                                   self.reward_prompt, self.fact_captions, self.args.seed,
                                   self.args.per_device_train_batch_size, self.accelerator.device)

    def _global_moments(self, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, variance) over the masked entries of every rank's rollout; the variance is the sample one unless
        `whiten_unbiased` is off (then the population one, as LLaVA-RLHF)."""
        mask = mask.to(values.dtype)
        stats = torch.stack([(values * mask).sum(), (values * values * mask).sum(), mask.sum()])
        total, square, count = self.accelerator.reduce(stats, reduction="sum")
        mean = total / count.clamp(min=1)
        var = square / count.clamp(min=1) - mean * mean
        if self.args.whiten_unbiased:
            var = var * count / (count - 1).clamp(min=1)
        return mean, var.clamp(min=0)

    def _minibatches(self, batch: dict, images_per_row: list[int]) -> list[dict]:
        """ppo_epochs passes over the rollout, each in its own shuffled order, cut into minibatches."""
        n = batch["input_ids"].shape[0]
        rows = split_rows({k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}, n, images_per_row,
                          row_keys=GRID_KEYS, placeholder_id=self.placeholder_id)
        size = self.args.per_device_train_batch_size
        rng = random.Random(self.args.seed * 7919 + self.state.global_step)
        keys = token_keys(batch, n)
        out = []
        for _ in range(self.args.ppo_epochs):
            order = list(range(n))
            rng.shuffle(order)
            for start in range(0, n, size):
                out.append(stack_rows([rows[i] for i in order[start:start + size]], self.pad_id, keys))
        return out

    def _log_rollout(self, parts, score, kl, values, returns, mask, lengths, has_eos, logprobs) -> None:
        gather = self.accelerator.gather
        for key, value in parts.items():
            self._metrics[key].append(gather(value.float()).mean().item())
        self.reward_curve.append(gather(parts["rewards/task"].float()).mean().item())
        self._metrics["rewards/score"].append(gather(score.float()).mean().item())
        self._metrics["kl"].append(gather(kl.sum(dim=1)).mean().item())
        self._metrics["response_length"].append(gather(lengths.float()).mean().item())
        self._metrics["no_eos_fraction"].append(gather((~has_eos).float()).mean().item())
        self._metrics["logprob"].append(gather(masked_mean(logprobs, mask).reshape(1)).mean().item())
        # Explained variance of the critic's values against the returns they predict, over every rank's response
        # tokens: from summed moments, since the ranks hold different numbers of tokens (a gather of the tokens
        # themselves would be a collective of unequal sizes).
        m = mask.bool()
        r, e = returns[m].float(), (returns - values)[m].float()
        sums = torch.stack([r.sum(), (r * r).sum(), e.sum(), (e * e).sum(), r.new_tensor(float(r.numel()))])
        r_sum, r_square, e_sum, e_square, count = self.accelerator.reduce(sums, reduction="sum").tolist()
        count = max(count, 1.0)
        var_r = r_square / count - (r_sum / count) ** 2
        var_e = e_square / count - (e_sum / count) ** 2
        self._metrics["value/explained_variance"].append(1 - var_e / var_r if var_r > 1e-12 else 0.0)

    # --------------------------------------------------------------------------------------------- update

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args = self.args
        model_inputs = {k: v for k, v in inputs.items() if k not in NON_MODEL_KEYS}
        labels = inputs["input_ids"].masked_fill(inputs["action_mask"] == 0, -100)
        mask = inputs["action_mask"][:, 1:]  # [b, L-1]
        policy_out, values = model(**model_inputs, labels=labels)
        logprobs = policy_out.log_probs  # [b, L-1]
        # Token means over every rank's minibatch, not this rank's: the ranks' gradients are averaged, so each
        # divides its token sum by the mean token count per rank. 2 ranks x 2 rows then train as 1 x 4 rows.
        tokens = self.accelerator.reduce(mask.sum().to(logprobs.dtype), reduction="sum") / self.accelerator.num_processes
        pg = ppo_policy_loss(logprobs, inputs["old_logprobs"], inputs["advantages"], mask, args.clip_range, tokens)
        vf = ppo_value_loss(values[:, :-1].float(), inputs["old_values"], inputs["returns"], mask,
                            args.clip_range_value, tokens.float())
        loss = pg.loss + args.vf_coef * vf.loss
        gather = self.accelerator.gather
        for key, value in {"loss/policy": pg.loss, "loss/value": vf.loss, "policy/clipfrac": pg.clipfrac,
                           "policy/approx_kl": pg.approx_kl, "value/clipfrac": vf.clipfrac,
                           "policy/entropy": masked_mean(policy_out.entropy.detach(), mask)}.items():
            self._metrics[key].append(gather(value.detach().float().reshape(1)).mean().item())
        return (loss, None) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        for key, values in self._metrics.items():
            if values:
                logs[key] = sum(values) / len(values)
        self._metrics.clear()
        if self.rollout_seconds:
            logs["time/rollout_s"] = self.rollout_seconds[-1]
        super().log(logs, start_time)

    # ---------------------------------------------------------------------------------------------- saving

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """Resuming: the policy and the critic from what `_save` wrote (DeepSpeed restores its own engine state)."""
        if self.is_deepspeed_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model=model)
        from pathlib import Path

        from align.train.resume import restore_saved, restore_scalar_head_model

        module = self.accelerator.unwrap_model(self.model)
        restore_saved(module.policy, Path(resume_from_checkpoint))
        restore_scalar_head_model(module.critic, Path(resume_from_checkpoint) / "value_model")
        return None

    def _save(self, output_dir: str | None = None, state_dict=None):
        """The policy (adapter or whole model) and processor into `output_dir`; the critic under value_model/.
        Only the main process writes: under ZeRO-3 every rank calls this, and only rank 0 holds the gathered
        `state_dict` (another rank's own parameters are empty shards)."""
        if not self.args.should_save:
            return
        from pathlib import Path

        from align.models.freeze import save_trained, sub_state_dict

        output_dir = Path(output_dir or self.args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        module = self.accelerator.unwrap_model(self.model)
        state_dict = module.state_dict() if state_dict is None else state_dict
        save_trained(module.policy, output_dir, sub_state_dict(state_dict, "policy."))  # adapter + its extras
        if self.processing_class is not None:
            self.processing_class.save_pretrained(str(output_dir))
        module.critic.save_pretrained(output_dir / "value_model", state_dict=sub_state_dict(state_dict, "critic."))
        torch.save(self.args, output_dir / "training_args.bin")


def _identity(features: list[dict]) -> list[dict]:
    return features
