"""`align models ...`: build tiny random checkpoints and describe checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from align.cli._options import OverwriteOpt

app = typer.Typer(help="Build tiny random checkpoints and describe models.", no_args_is_help=True)


@app.command()
def tiny(
    family: Annotated[str, typer.Option("--family", "-f", help="Model family (see `align models families`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (written atomically).")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed for weights and tokenizer.")] = 0,
    size: Annotated[str | None, typer.Option(
        "--size", help="llava only: tiny (default, 0.24M parameters), small (0.89M) or base (20.5M).")] = None,
    image_size: Annotated[int | None, typer.Option(
        "--image-size", help="llava only: image side in pixels (default: the size's; e.g. 224 with --patch-size 14 "
                             "gives LLaVA's 256 image tokens).")] = None,
    patch_size: Annotated[int | None, typer.Option(
        "--patch-size", help="llava only: vision patch side in pixels (default: the size's).")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Build a tiny random checkpoint of FAMILY offline: config, safetensors, tokenizer, processor, chat template."""
    from align.files import check_output_target
    from align.models.report import print_model_summary
    from align.models.tiny import build_tiny_atomic

    check_output_target(out, overwrite)
    path = build_tiny_atomic(family, out, seed=seed, size=size, image_size=image_size, patch_size=patch_size)
    print_model_summary(path, title=f"tiny {family} -> {path}")


@app.command()
def info(
    path: Annotated[str, typer.Argument(help="Checkpoint folder or hub id.")],
) -> None:
    """Family and parameter counts per part (vision, connector, xattn, language model, lm head)."""
    from align.models.report import print_model_summary

    print_model_summary(path)


@app.command()
def families() -> None:
    """List the supported model families and the parts each one has."""
    from rich.console import Console
    from rich.table import Table

    from align.models.families import FAMILIES
    from align.models.tiny import TINY_BUILDERS

    table = Table(title="Supported families")
    for column in ("family", "model_type", "parts", "video", "tiny"):
        table.add_column(column)
    for name, fam in sorted(FAMILIES.items()):
        table.add_row(name, ", ".join(fam.model_types), ", ".join(fam.parts), "yes" if fam.supports_video else "",
                      "yes" if name in TINY_BUILDERS else "")
    Console().print(table)


@app.command()
def merge(
    adapter: Annotated[Path, typer.Argument(help="PEFT LoRA adapter folder (from `align sft --train lora...`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for the merged checkpoint.")],
    base: Annotated[
        str | None, typer.Option("--base", help="Base model; default: the one recorded in adapter_config.json.")
    ] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Fold a LoRA adapter into its base model; the result loads with plain transformers."""
    from align.files import check_output_target
    from align.models.merge import merge_adapter

    check_output_target(out, overwrite)
    path = merge_adapter(adapter, out, base=base)
    typer.echo(f"merged model written to {path}")
