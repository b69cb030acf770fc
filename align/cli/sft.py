"""`align sft`: supervised fine-tuning with the literature's trainable-part regimes, one or more stages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from align.cli._options import ConfigOpt, DeepSpeedOpt, ImageRootOpt, OverridesArg, OverwriteOpt, TrainOpt


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
    from align.resolve import resolve_config
    from align.train.common import init_distributed_if_launched, is_main_process
    from align.train.sft.run import run_sft
    from align.train.sft.settings import AlignSFTConfig

    init_distributed_if_launched()
    cfg = resolve_config(
        AlignSFTConfig,
        recipe=config,
        flags={"model": model, "data": str(data) if data else None, "output_dir": str(output_dir) if output_dir
               else None, "train": train, "deepspeed": deepspeed,
               "image_root": str(image_root) if image_root else None},
        overrides=overrides or [],
    )
    out = run_sft(cfg, resume=resume, overwrite=overwrite)
    if is_main_process():
        typer.echo(f"model written to {out}")
