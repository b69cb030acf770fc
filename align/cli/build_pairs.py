"""`align build-pairs METHOD`: synthetic preference pairs from source records (STIC, POVID, BPO, HALVA, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from align.cli._options import ConfigOpt, ImageRootOpt, OverridesArg, OverwriteOpt, SeedOpt
from data_builders import BUILDERS


def build_pairs(
    method: Annotated[str, typer.Argument(help=f"Builder: {', '.join(BUILDERS)}.")],
    input: Annotated[Path | None, typer.Option("--input", "-i", help="Source records (file or dataset folder).")]
    = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output dataset folder (written atomically).")]
    = None,
    image_root: ImageRootOpt = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Local VLM for builders that generate.")] = None,
    seed: SeedOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Use only the first N source rows.")] = None,
    config: ConfigOpt = None,
    overwrite: OverwriteOpt = False,
    overrides: OverridesArg = None,
) -> None:
    """Build preference pairs; resumable (rerun the same command after an interruption) and deterministic."""
    from align.resolve import resolve_config
    from align.train.common import init_distributed_if_launched
    from data_builders import builder_class
    from data_builders.base import run_build
    from data_builders.report import print_summary

    cls = builder_class(method)
    cfg = resolve_config(
        cls.config_cls,
        recipe=config,
        flags={"input": str(input) if input else None, "out": str(out) if out else None,
               "image_root": str(image_root) if image_root else None, "model": model, "seed": seed,
               "limit": limit},
        overrides=overrides or [],
    )
    cfg.method = method
    init_distributed_if_launched()
    summary = run_build(cls(cfg), overwrite=overwrite)
    if summary.out is not None and summary.pairs_written:
        print_summary(method, summary)
