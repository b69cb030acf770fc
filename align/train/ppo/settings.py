"""`AlignPPOConfig(TrainingArguments)`: PPO with a critic for VLMs (LLaVA-RLHF), field names after its code.

One optimizer step trains on one minibatch (`per_device_train_batch_size` rollouts per device); each rollout
batch (`rollout_batch_size` prompts per device) is reused for `ppo_epochs` passes in shuffled minibatches, so a
rollout feeds ppo_epochs x rollout_batch_size / per_device_train_batch_size steps. `max_steps` counts those steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from align.errors import ConfigError
from align.losses import KL_ESTIMATORS
from align.train.run_config import RewardFields, RunFields


@dataclass
class AlignPPOConfig(RewardFields, RunFields, TrainingArguments):
    """TrainingArguments plus the models, rollout, reward shaping and PPO settings of a run."""

    reward_weights: list[float] | None = field(
        default=None, metadata={"help": "One weight per reward func (default 1 each)."})
    value_model: str | None = field(
        default=None, metadata={"help": "Where the critic starts: default the reward model's backbone (LLaVA-RLHF's "
                                        "init_value_with_reward), else `model`; its value head starts at zero."})
    value_train: str = field(default="lora", metadata={"help": "Trainable parts of the critic's backbone."})
    rollout_batch_size: int = field(default=8, metadata={"help": "Prompts per device in one rollout batch."})
    ppo_epochs: int = field(default=2, metadata={"help": "Passes over each rollout batch (LLaVA-RLHF noptepochs)."})
    max_new_tokens: int = field(default=128, metadata={"help": "Longest response sampled (LLaVA-RLHF: 896)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the rollouts."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling of the rollouts (1: off)."})
    kl_coef: float = field(default=0.1, metadata={"help": "Per-token KL penalty weight (LLaVA-RLHF script: 0.1)."})
    kl_estimator: str = field(default="k1", metadata={"help": "k1 (log-ratio clamped at 0, LLaVA-RLHF) or k3."})
    clip_range: float = field(default=0.2, metadata={"help": "PPO ratio clip."})
    clip_range_value: float = field(default=0.2, metadata={"help": "Value clip around the rollout's values."})
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss."})
    gamma: float = field(default=1.0, metadata={"help": "GAE discount."})
    lam: float = field(default=1.0, metadata={"help": "GAE lambda."})
    whiten_rewards: bool = field(default=False, metadata={"help": "Whiten the shaped rewards (mean kept)."})
    reward_scale: float = field(
        default=1.0, metadata={"help": "Multiplies the shaped per-token reward (terminal score and KL penalty "
                                       "alike) before GAE, as LLaVA-RLHF's code multiplies it by 10 when rewards "
                                       "are not whitened."})
    whiten_unbiased: bool = field(
        default=True, metadata={"help": "Whitening divides by the sample standard deviation (N - 1); false: the "
                                        "population one (N), as LLaVA-RLHF's whiten."})
    whiten_advantages: bool = field(default=True, metadata={"help": "Whiten the advantages of each rollout."})
    length_bonus_score: float = field(
        default=0.0, metadata={"help": "Adds length_bonus_score x response tokens / length budget (LLaVA-RLHF: "
                                       "-10, a length penalty)."})
    length_budget: int | None = field(
        default=None, metadata={"help": "Tokens the length term divides by (default max_new_tokens; LLaVA-RLHF 896)."})
    correct_bonus_score: float = field(
        default=0.0, metadata={"help": "Weight of LLaVA-RLHF's symbolic correctness bonus on rows with a "
                                       "caption_type (multiple choice, yes/no); LLaVA-RLHF: 2.0."})
    penalty_reward_value: float = field(
        default=0.0, metadata={"help": "Added to the score of a response that hit max_new_tokens without EOS "
                                       "(LLaVA-RLHF: -8)."})
    max_prompt_length: int | None = field(default=1024, metadata={"help": "Longest prompt in tokens."})

    def __post_init__(self):
        if self.train is None:
            self.train = "lora"  # the policy trains a LoRA; the reference is the adapter-disabled policy
        self.apply_device_defaults()
        problems = self.common_problems()
        from align.train.run_config import policy_problems

        problems += policy_problems(self.value_train, "value_train")
        problems += self.reward_problems()
        sizes = (self.rollout_batch_size, self.per_device_train_batch_size, self.ppo_epochs,
                 self.gradient_accumulation_steps)
        sizes_valid = all(size >= 1 for size in sizes)  # else a range problem is reported; the divisions need them
        if sizes_valid and self.rollout_batch_size % self.per_device_train_batch_size:
            problems.append(f"rollout_batch_size {self.rollout_batch_size} must be a multiple of "
                            f"per_device_train_batch_size {self.per_device_train_batch_size} (the minibatch)")
        elif sizes_valid:
            steps = self.steps_per_rollout
            if steps % self.gradient_accumulation_steps:
                problems.append(f"a rollout feeds {steps} minibatch steps, not a multiple of "
                                f"gradient_accumulation_steps {self.gradient_accumulation_steps}")
        if self.kl_estimator not in KL_ESTIMATORS:
            problems.append(f"kl_estimator must be one of {', '.join(KL_ESTIMATORS)}, got {self.kl_estimator!r}")
        if problems:
            raise ConfigError(problems)
        super().__post_init__()

    @property
    def steps_per_rollout(self) -> int:
        """Minibatch steps one rollout batch feeds: ppo_epochs x (rollout_batch_size / minibatch)."""
        return self.ppo_epochs * (self.rollout_batch_size // self.per_device_train_batch_size)
