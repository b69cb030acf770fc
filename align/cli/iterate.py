"""`align iterate`: on-policy rounds (RLAIF-V, OPA-DPO): sample from the policy, build pairs, train, repeat."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from align.cli._options import ConfigOpt, ImageRootOpt, OverridesArg, SeedOpt


def iterate(
    config: ConfigOpt = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Starting policy: folder or hub id.")] = None,
    data: Annotated[Path | None, typer.Option("--data", "-d", help="Prompt rows (source records).")] = None,
    output_dir: Annotated[Path | None, typer.Option("--output-dir", "-o", help="Run folder (round_K/ each).")] = None,
    rounds: Annotated[int | None, typer.Option("--rounds", help="Number of rounds.")] = None,
    image_root: ImageRootOpt = None,
    seed: SeedOpt = None,
    overrides: OverridesArg = None,
) -> None:
    """On-policy alignment in rounds: the policy's own responses -> pairs (pairs.method) -> align dpo -> next
    round's policy. Rerunning the same command continues at the first unfinished step."""
    from align.iterate.rounds import run_iterate
    from align.iterate.settings import IterateConfig
    from align.resolve import resolve_config

    flags = {"model": model, "data": data, "output_dir": output_dir, "rounds": rounds, "image_root": image_root,
             "seed": seed}
    flags = {key: str(value) if isinstance(value, Path) else value for key, value in flags.items()}
    cfg = resolve_config(IterateConfig, recipe=config, flags=flags, overrides=overrides or [])
    records = run_iterate(cfg)
    typer.echo(f"round {records[-1]['round']} policy written to {records[-1]['policy']}")
