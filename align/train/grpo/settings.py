"""`AlignGRPOConfig(GRPOConfig)`: TRL's GRPO settings (loss_type, num_generations, beta, epsilon, scale_rewards,
importance_sampling_level, ...) plus the models and rewards of an align run.

Batch arithmetic is TRL's: one optimizer step trains on `per_device_train_batch_size` completions per device; a
generation batch (`generation_batch_size`, default per_device_train_batch_size x devices x
gradient_accumulation_steps completions) holds `generation_batch_size / num_generations` prompts, each answered
`num_generations` times, and feeds `steps_per_generation` x `num_iterations` micro-batches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from trl import GRPOConfig

from align.errors import ConfigError
from align.train.run_config import RewardFields, RunFields

LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "bnpo", "cispo", "sapo", "luspo", "vespo")
SCALE_REWARDS = ("group", "batch", "none")


@dataclass
class AlignGRPOConfig(RewardFields, RunFields, GRPOConfig):
    """GRPOConfig plus the starting checkpoint, prompt data, trainable parts and rewards of an align run."""

    max_prompt_length: int | None = field(default=1024, metadata={"help": "Longest prompt in tokens."})

    def __post_init__(self):
        if self.train is None:
            self.train = "lora"  # the reference of a beta > 0 run is then the adapter-disabled policy
        self.apply_device_defaults()
        from align.ranges import GRPO_RANGES

        problems = self.common_problems(GRPO_RANGES)
        problems += self.reward_problems()
        if self.loss_type not in LOSS_TYPES:
            problems.append(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {self.loss_type!r}")
        if self.scale_rewards not in (*SCALE_REWARDS, True, False):
            problems.append(f"scale_rewards must be one of {', '.join(SCALE_REWARDS)}, got {self.scale_rewards!r}")
        if self.importance_sampling_level not in ("token", "sequence"):
            problems.append("importance_sampling_level must be token (GRPO) or sequence (GSPO), got "
                            f"{self.importance_sampling_level!r}")
        problems += self._batch_problems()
        unsupported = {"use_vllm": "align samples with the model's own generate, through its encoders for every "
                                   "family; TRL's vLLM rollouts are not wired in",
                       "use_transformers_continuous_batching": "it is text-only in TRL",
                       "sync_ref_model": "the reference is the adapter-disabled policy or a frozen copy"}
        problems += [f"{key} is not supported by align grpo: {why}" for key, why in unsupported.items()
                     if getattr(self, key)]
        if problems:
            raise ConfigError(problems)
        super().__post_init__()

    def _batch_problems(self) -> list[str]:
        """TRL's batch checks, as one-line problems before TRL would raise: the groups of `num_generations`
        completions must fill the generation batch exactly."""
        if self.num_generations is None or self.num_generations < 2:
            return [f"num_generations must be at least 2 (a group's rewards are compared), got {self.num_generations}"]
        if self.per_device_train_batch_size < 1 or self.gradient_accumulation_steps < 1:
            return []  # a range problem is reported already
        if self.generation_batch_size is not None and self.steps_per_generation is not None:
            return ["set generation_batch_size or steps_per_generation, not both"]
        world = int(os.environ.get("WORLD_SIZE", "1"))
        per_step = self.per_device_train_batch_size * world
        if self.generation_batch_size is not None:
            if self.generation_batch_size % per_step:
                return [f"generation_batch_size {self.generation_batch_size} must be a multiple of "
                        f"per_device_train_batch_size x processes = {per_step}"]
            batch = self.generation_batch_size
        else:
            batch = per_step * (self.steps_per_generation or self.gradient_accumulation_steps)
        if batch % self.num_generations:
            return [f"a generation batch of {batch} completions (per_device_train_batch_size "
                    f"{self.per_device_train_batch_size} x {world} process(es) x "
                    f"{batch // per_step} steps) does not divide into groups of num_generations "
                    f"{self.num_generations}; make it a multiple"]
        return []
