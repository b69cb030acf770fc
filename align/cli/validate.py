"""`align validate [PATH ...]`: check recipes against the config dataclasses, all problems at once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def validate(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Recipe files or folders (recursively). Default: ./recipes")
    ] = None,
    kind: Annotated[
        str | None, typer.Option("--kind", help="Validate as this recipe kind instead of the one its folder names.")
    ] = None,
) -> None:
    """Validate recipes without loading any weights; exit 2 listing every problem."""
    from rich.console import Console

    from align.errors import AlignError
    from align.recipes import validate_paths

    report = validate_paths(list(paths or [Path("recipes")]), kind=kind)
    console = Console(stderr=True)
    for problem in report.problems:
        console.print(f"[red]x[/red] {problem}", highlight=False, soft_wrap=True)
    if report.problems:
        raise AlignError(f"{len(report.problems)} problem(s) in {len(report.checked)} recipe file(s)")
    Console().print(f"[green]ok[/green] {len(report.checked)} recipe file(s) valid", highlight=False)
