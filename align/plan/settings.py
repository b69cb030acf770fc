"""What `align plan` is asked: the command and its models (`COMMANDS`), the hardware and the batch."""

from __future__ import annotations

from dataclasses import dataclass

from align.errors import ConfigError


@dataclass(frozen=True)
class Command:
    """What a training command loads and runs, as far as memory goes."""

    help: str
    rows: int  # sequences per sample that keep activations (dpo: the variant's row groups instead)
    reference: bool = False  # a frozen copy of the starting model, unless PEFT wraps the policy
    reward_model: bool = False  # a frozen reward model (backbone + scalar head)
    critic: bool = False  # a trained value model (backbone + scalar head, its own trainable parts)
    scalar_head: bool = False  # the trained model ends in a scalar head instead of the LM head
    # The policy when --train is not given: None is the family's natural policy (`align sft`/`align dpo`);
    # `align reward` and `align ppo` train LoRA (AlignRewardConfig / AlignPPOConfig __post_init__).
    default_policy: str | None = None


COMMANDS: dict[str, Command] = {
    "sft": Command("supervised fine-tuning: one sequence per sample", rows=1),
    "dpo": Command("preference optimisation: chosen and rejected rows per pair (mdpo: three) and a reference",
                   rows=2, reference=True),
    "reward": Command("reward model: chosen and rejected rows per pair through the backbone + scalar head",
                      rows=2, scalar_head=True, default_policy="lora"),
    "ppo": Command("PPO: policy, reference, frozen reward model and a trained critic", rows=1, reference=True,
                   reward_model=True, critic=True, default_policy="lora"),
}


@dataclass
class PlanSettings:
    """One planning question. `gpu_memory` in GiB per GPU; `seq_len` counts every token the language model
    sees (image tokens included); `micro_batch` is samples (pairs for dpo and reward) per GPU."""

    model: str
    command: str
    gpus: int
    train: str | None = None
    variant: str | None = None
    deepspeed: str | None = None
    gpu_memory: float = 80.0
    micro_batch: int = 1
    seq_len: int = 2048
    dtype: str = "bf16"
    gradient_checkpointing: bool = True
    cached_reference: bool = False
    lora_r: int = 16
    offline: bool = False

    def __post_init__(self):
        from align.plan.memory import DTYPE_BYTES

        problems = []
        if self.command not in COMMANDS:
            problems.append(f"unknown command '{self.command}'; known: {', '.join(COMMANDS)}")
        for name in ("gpus", "micro_batch", "seq_len", "lora_r"):
            if getattr(self, name) < 1:
                problems.append(f"{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})")
        if not self.gpu_memory > 0:
            problems.append(f"gpu-memory must be positive GiB (got {self.gpu_memory})")
        if self.dtype not in DTYPE_BYTES:
            problems.append(f"unknown dtype '{self.dtype}'; known: {', '.join(DTYPE_BYTES)}")
        if self.command == "dpo":
            problems += self._dpo_problems()
        else:
            if self.variant is not None:
                problems.append(f"--variant applies to dpo only (the command is {self.command})")
            if self.cached_reference:
                problems.append(f"--cached-reference applies to dpo only (the command is {self.command})")
        if problems:
            raise ConfigError(problems)

    def _dpo_problems(self) -> list[str]:
        from align.train.dpo.variants import VARIANTS

        self.variant = self.variant or "dpo"
        if self.variant not in VARIANTS:
            return [f"unknown variant '{self.variant}'; known variants: {', '.join(VARIANTS)}"]
        if self.cached_reference and not VARIANTS[self.variant].cacheable:
            return [f"variant {self.variant} cannot cache its reference values (it reads the reference on every "
                    "step); drop --cached-reference"]
        return []

    @property
    def rows(self) -> int:
        """Sequences per sample that keep activations."""
        if self.command == "dpo":
            from align.train.dpo.variants import VARIANTS

            return VARIANTS[self.variant].row_groups
        return COMMANDS[self.command].rows
