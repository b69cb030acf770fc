"""`align grpo`: group-relative RL (GRPO, DAPO, Dr. GRPO, GSPO) against verifiable rewards and/or a reward model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from align.cli._options import (
    ConfigOpt,
    DeepSpeedOpt,
    ImageRootOpt,
    OverridesArg,
    OverwriteOpt,
    PolicyOutOpt,
    ResumeOpt,
    RewardFuncOpt,
    RewardModelOpt,
    TrainOpt,
    run_training,
)


def grpo(
    config: ConfigOpt = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Policy checkpoint (an SFT model).")] = None,
    data: Annotated[Path | None, typer.Option(
        "--data", "-d", help="Prompt records (or SFT records: their last answer becomes the reference column).")] = None,
    reward_model: RewardModelOpt = None,
    reward_funcs: RewardFuncOpt = None,
    output_dir: PolicyOutOpt = None,
    train: TrainOpt = None,
    deepspeed: DeepSpeedOpt = None,
    image_root: ImageRootOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    overrides: OverridesArg = None,
) -> None:
    """Optimise a policy with GRPO on TRL's GRPOTrainer: num_generations answers per prompt, each scored by the
    reward functions (and reward model), advantages relative to the prompt's group; TRL's loss types pass through
    (loss_type=grpo|dapo|dr_grpo|bnpo|..., importance_sampling_level=sequence for GSPO, beta, epsilon). The policy
    is saved as an adapter (LoRA) or a whole checkpoint."""
    from align.train.grpo.run import run_grpo
    from align.train.grpo.settings import AlignGRPOConfig

    run_training(AlignGRPOConfig, run_grpo, config, {
        "model": model, "data": data, "reward_model": reward_model, "reward_funcs": reward_funcs or None,
        "output_dir": output_dir, "train": train, "deepspeed": deepspeed, "image_root": image_root},
        overrides, resume, overwrite, written="policy")
