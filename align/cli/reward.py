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
    from align.resolve import resolve_config
    from align.train.common import init_distributed_if_launched, is_main_process
    from align.train.reward.run import run_reward
    from align.train.reward.settings import AlignRewardConfig

    init_distributed_if_launched()
    paths = {"data": data, "eval_data": eval_data, "output_dir": output_dir, "fact_captions": fact_captions,
             "image_root": image_root}
    cfg = resolve_config(
        AlignRewardConfig,
        recipe=config,
        flags={"model": model, "train": train, "deepspeed": deepspeed,
               **{k: str(v) if v else None for k, v in paths.items()}},
        overrides=overrides or [],
    )
    out = run_reward(cfg, resume=resume, overwrite=overwrite)
    if is_main_process():
        typer.echo(f"reward model written to {out}")
