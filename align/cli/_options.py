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
DeepSpeedOpt = Annotated[
    str | None, typer.Option("--deepspeed", help="zero2, zero3, zero3_offload or a DeepSpeed JSON file.")
]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing output that align did not write (a file, or a "
                                           "folder without align's records).")
]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in output_dir.")]
