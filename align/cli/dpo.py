"""`align dpo --variant V`: preference optimisation (DPO and its hallucination variants) on TRL's DPOTrainer."""

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
from align.train.dpo.variants import VARIANTS


def dpo(
    variant: Annotated[str | None, typer.Option("--variant", "-v", help=f"Variant: {', '.join(VARIANTS)}.")] = None,
    config: ConfigOpt = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Policy checkpoint: folder or hub id.")] = None,
    data: Annotated[Path | None, typer.Option("--data", "-d", help="Preference records (file or folder).")] = None,
    output_dir: Annotated[Path | None, typer.Option("--output-dir", "-o", help="Where the model is written.")] = None,
    train: TrainOpt = None,
    deepspeed: DeepSpeedOpt = None,
    image_root: ImageRootOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    overrides: OverridesArg = None,
) -> None:
    """Align a VLM with preference pairs: TRL's DPO losses, or a variant such as RLHF-V's DDPO."""
    from align.train.dpo.run import run_dpo
    from align.train.dpo.settings import AlignDPOConfig

    run_training(AlignDPOConfig, run_dpo, config, {
        "variant": variant, "model": model, "data": data, "output_dir": output_dir, "train": train,
        "deepspeed": deepspeed, "image_root": image_root}, overrides, resume, overwrite, written="model")
