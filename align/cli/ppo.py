"""`align ppo`: PPO with a critic (LLaVA-RLHF) against a reward model and/or Python reward functions."""

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


def ppo(
    config: ConfigOpt = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Policy checkpoint (the SFT model).")] = None,
    data: Annotated[Path | None, typer.Option("--data", "-d", help="Prompt records or SFT records.")] = None,
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
    """Optimise a policy with PPO: rollouts with images, KL-shaped rewards, GAE, a critic started from the
    reward model; the policy is saved as an adapter (LoRA) or a whole checkpoint, its critic under value_model/."""
    from align.train.ppo.run import run_ppo
    from align.train.ppo.settings import AlignPPOConfig

    run_training(AlignPPOConfig, run_ppo, config, {
        "model": model, "data": data, "reward_model": reward_model, "reward_funcs": reward_funcs or None,
        "output_dir": output_dir, "train": train, "deepspeed": deepspeed, "image_root": image_root},
        overrides, resume, overwrite, written="policy")
