"""Options shared by several commands (Typer `Annotated` style). A flag's default is None: not given, so it
never hides a recipe value."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="Recipe YAML; flags and key=value overrides win over it.")
]
OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(help="Trailing key=value overrides (dotted keys for nested fields), applied last.",
                   show_default=False),
]


def policies_help() -> str:
    """The `--train` help, listed from the policy registry."""
    from align.models.freeze import POLICIES

    return f"Trainable parts: {', '.join(POLICIES)} (combine with +, e.g. lora+projector)."


TrainOpt = Annotated[str | None, typer.Option("--train", help=policies_help())]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed.")]
ImageRootOpt = Annotated[
    Path | None, typer.Option("--image-root", help="Folder that relative image paths resolve under.")
]
def deepspeed_help() -> str:
    """The `--deepspeed` help, listed from the packaged presets."""
    from align.train.common import DEEPSPEED_PRESETS

    return f"{', '.join(DEEPSPEED_PRESETS)} or a DeepSpeed JSON file."


DeepSpeedOpt = Annotated[str | None, typer.Option("--deepspeed", help=deepspeed_help())]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing output that align did not write (a file, or a "
                                           "folder without align's records).")
]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in output_dir.")]
# The RL commands' rewards (align ppo, align grpo).
RewardModelOpt = Annotated[Path | None, typer.Option("--reward-model", help="Reward model folder from `align reward`.")]
RewardFuncOpt = Annotated[
    list[str] | None, typer.Option("--reward-func", help="Python reward callable by dotted path (repeatable).")
]
PolicyOutOpt = Annotated[Path | None, typer.Option("--output-dir", "-o", help="Where the policy is written.")]


def run_training(config_class: type, run, recipe: Path | None, flags: dict, overrides: list[str] | None,
                 resume: bool, overwrite: bool, written: str) -> None:
    """The body every trainer command shares: under a launcher without CUDA start gloo first; resolve the config
    (defaults < recipe < flags < key=value overrides; Path flags as strings); run; say on rank 0 where the result
    went."""
    from align.distributed import is_main_process
    from align.resolve import resolve_config
    from align.train.common import init_distributed_if_launched

    init_distributed_if_launched()
    flags = {key: str(value) if isinstance(value, Path) else value for key, value in flags.items()}
    cfg = resolve_config(config_class, recipe=recipe, flags=flags, overrides=overrides or [])
    out = run(cfg, resume=resume, overwrite=overwrite)
    if is_main_process():
        typer.echo(f"{written} written to {out}")
