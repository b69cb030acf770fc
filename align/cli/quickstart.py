"""`align quickstart`: the whole pipeline on a generated shapes world with a tiny model, on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from align.quickstart.pipeline import METHODS, QuickstartConfig


def quickstart(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (reused: finished steps are skipped).")]
    = Path("runs/quickstart"),
    fast: Annotated[bool, typer.Option("--fast", help="A smaller world and fewer steps (about 2 minutes).")]
    = False,
    seeds: Annotated[int, typer.Option("--seeds", help="Repeat with this many seeds; report mean and spread.")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="First seed.")] = 0,
    onpolicy: Annotated[bool | None, typer.Option(
        "--onpolicy/--no-onpolicy", help="Also run on-policy rounds (align iterate): the model's own responses "
        "against the world's exact corrections of them (OPA-DPO style), beside SFT on the corrections (default: "
        "on).")] = None,
    rounds: Annotated[int | None, typer.Option("--rounds", help="On-policy rounds (default: 1).")]
    = None,
    methods: Annotated[str | None, typer.Option(
        "--methods", help=f"Comma-separated preference methods: {', '.join(METHODS)} (default: "
        f"{','.join(QuickstartConfig.methods)}).")] = None,
    threads: Annotated[int, typer.Option(
        "--threads", help="CPU threads for the tiny model; 0 (default): the cores other processes leave free, "
        "measured before each step.")] = 0,
) -> None:
    """World -> tiny LLaVA -> SFT -> pairs -> DPO variants and an SFT control -> ShapesCHAIR and ShapesPOPE
    before and after; prints the comparison and writes results.json, results.md and results.png."""
    from align.errors import ConfigError
    from align.quickstart.pipeline import QuickstartConfig, run_quickstart

    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    if threads < 0:
        raise ConfigError(f"--threads must be >= 0, got {threads}")
    if rounds is not None and rounds < 1:
        raise ConfigError(f"--rounds must be >= 1, got {rounds}")
    extra: dict = {"threads": threads} if onpolicy is None else {"onpolicy": onpolicy, "threads": threads}
    if rounds is not None:
        extra["rounds"] = rounds
    if methods is not None:
        extra["methods"] = tuple(m.strip() for m in methods.split(",") if m.strip())
    cfg = (QuickstartConfig.fast_settings if fast else QuickstartConfig)(out=str(out), seeds=seeds, seed=seed,
                                                                         **extra)
    run_quickstart(cfg)
    typer.echo(f"results written to {out / 'results.md'} and {out / 'results.png'}")
