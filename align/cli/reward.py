"""`align reward`: a reward model (VLM + scalar head) trained on preference pairs (LLaVA-RLHF, Fact-RLHF)."""

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
    ResumeOpt,
    TrainOpt,
    run_training,
)


def reward(
    config: ConfigOpt = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Backbone checkpoint (the SFT model).")] = None,
    data: Annotated[Path | None, typer.Option("--data", "-d", help="Preference records (file or folder).")] = None,
    eval_data: Annotated[Path | None, typer.Option("--eval-data", help="Held-out pairs for accuracy.")] = None,
    output_dir: Annotated[Path | None, typer.Option("--output-dir", "-o", help="Where the reward model goes.")]
    = None,
    train: TrainOpt = None,
    fact_captions: Annotated[
        Path | None, typer.Option("--fact-captions", help="Fact-RLHF: JSON {image: [captions]} for the prompt.")
    ] = None,
    deepspeed: DeepSpeedOpt = None,
    image_root: ImageRootOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    overrides: OverridesArg = None,
) -> None:
    """Train a reward model: a zero-initialised scalar head on a VLM, read at the last token of (image,
    conversation, response, reward prompt), with Bradley-Terry loss plus LLaVA-RLHF's centring term."""
    from align.train.reward.run import run_reward
    from align.train.reward.settings import AlignRewardConfig

    run_training(AlignRewardConfig, run_reward, config, {
        "model": model, "data": data, "eval_data": eval_data, "output_dir": output_dir, "train": train,
        "fact_captions": fact_captions, "deepspeed": deepspeed, "image_root": image_root},
        overrides, resume, overwrite, written="reward model")
