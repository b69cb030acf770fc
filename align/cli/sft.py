"""`align sft`: supervised fine-tuning with the literature's trainable-part regimes, one or more stages."""

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
    TrainOpt,
    run_training,
)


def sft(
    config: ConfigOpt = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Base checkpoint: folder or hub id.")] = None,
    data: Annotated[Path | None, typer.Option("--data", "-d", help="SFT records or LLaVA conversation JSON.")] = None,
    output_dir: Annotated[Path | None, typer.Option("--output-dir", "-o", help="Where the model is written.")] = None,
    train: TrainOpt = None,
    deepspeed: DeepSpeedOpt = None,
    image_root: ImageRootOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Skip finished stages; continue from the last checkpoint.")]
    = False,
    overwrite: OverwriteOpt = False,
    overrides: OverridesArg = None,
) -> None:
    """Fine-tune a VLM on SFT conversations, training only the chosen parts, on the assistant turns only."""
    from align.train.sft.run import run_sft
    from align.train.sft.settings import AlignSFTConfig

    run_training(AlignSFTConfig, run_sft, config, {
        "model": model, "data": data, "output_dir": output_dir, "train": train, "deepspeed": deepspeed,
        "image_root": image_root}, overrides, resume, overwrite, written="model")
