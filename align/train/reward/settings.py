"""`AlignRewardConfig(TrainingArguments)`: a reward model (VLM + zero-initialised scalar head) trained on
preference pairs with LLaVA-RLHF's loss."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from align.errors import ConfigError
from align.train.run_config import RunFields


@dataclass
class AlignRewardConfig(RunFields, TrainingArguments):
    """TrainingArguments plus the model, data, trainable parts, reward prompt and loss of a reward model."""

    eval_data: str | None = field(
        default=None, metadata={"help": "Held-out preference pairs; accuracy (chosen scored strictly higher) is "
                                        "logged on them every eval_steps and at the end."})
    center_coef: float = field(
        default=1e-3, metadata={"help": "Weight of the centring term |mean(r_chosen + r_rejected)| (LLaVA-RLHF: "
                                        "1e-3); it keeps rewards near zero."})
    reward_prompt: str | None = field(
        default=None,
        metadata={"help": "User turn appended after the response before the score is read: llava_rlhf, fact_rlhf "
                          "(with {factual_prompt} filled from fact_captions), any text, or none (score read at "
                          "the response's last token)."})
    fact_captions: str | None = field(
        default=None,
        metadata={"help": "Fact-RLHF: JSON file {image name: [captions]}; the captions join the reward prompt "
                          "(shuffled per row) in training and whenever this reward model scores."})
    max_length: int | None = field(default=2048, metadata={"help": "Longest sequence (reward prompt included)."})

    def __post_init__(self):
        if self.train is None:
            self.train = "lora"  # LLaVA-RLHF trains its reward model with LoRA
        self.apply_device_defaults()
        problems = self.common_problems()
        if self.fact_captions and self.reward_prompt in (None, "", "none"):
            problems.append("fact_captions go into the reward prompt; set reward_prompt (e.g. fact_rlhf)")
        if self.eval_data and self.eval_strategy == "no":
            self.eval_strategy = "steps" if self.eval_steps else "epoch"
        if problems:
            raise ConfigError(problems)
        super().__post_init__()
