"""`align data ...`: look at datasets and generate the shapes world."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from align.cli._options import ConfigOpt, ImageRootOpt, OverridesArg, OverwriteOpt, SeedOpt

app = typer.Typer(help="Inspect and convert datasets; generate the synthetic shapes world.", no_args_is_help=True)


def _formats_help() -> str:
    from align.data.formats import FORMATS

    return f"Format: auto (detected from the columns), {', '.join(FORMATS)}."


@app.command()
def show(
    path: Annotated[Path, typer.Argument(help="A dataset: folder, JSONL, JSON list, parquet or datasets folder.")],
    rows: Annotated[int, typer.Option("--rows", "-n", min=0, help="Sample rows to print.")] = 3,
    image_root: ImageRootOpt = None,
) -> None:
    """Schema, counts and sample rows of a dataset, validated against the data contract."""
    from align.data.inspect import show_dataset

    show_dataset(path, rows=rows, image_root=image_root)


@app.command()
def convert(
    input: Annotated[Path, typer.Argument(help="The released data: JSON, JSONL, parquet, shard folder or datasets "
                                                "folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output dataset folder (written atomically).")],
    source_format: Annotated[str, typer.Option("--from", "-f", help=_formats_help())] = "auto",
    image_root: ImageRootOpt = None,
    images: Annotated[str, typer.Option("--images", help="Output images: embed (bytes in the shards), copy (an "
                                                         "images/ folder) or keep (paths unchanged).")] = "embed",
    overwrite: OverwriteOpt = False,
) -> None:
    """Convert a paper's released dataset into align's records (preference pairs, SFT conversations or builder
    sources), checking every row and image; a file of another format is refused with what it looks like."""
    from align.data.formats.convert import convert_dataset

    summary = convert_dataset(input, out, source_format, image_root, images, overwrite)
    _print_counts(f"{summary.format} -> {summary.kind} records in {summary.out}",
                  {"rows read": summary.rows_read, f"{summary.kind} records": summary.records,
                   "images": summary.images})


@app.command()
def shapes(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (written atomically).")],
    n: Annotated[int | None, typer.Option("--n", help="Number of images.")] = None,
    seed: SeedOpt = None,
    image_size: Annotated[int | None, typer.Option("--image-size", help="Image side in pixels.")] = None,
    cooccurrence: Annotated[
        float | None, typer.Option("--cooccurrence", help="Probability that a planted partner shape co-occurs.")
    ] = None,
    config: ConfigOpt = None,
    overwrite: OverwriteOpt = False,
    overrides: OverridesArg = None,
) -> None:
    """Generate the shapes world: images, sources, SFT conversations and POPE-style probes."""
    from align.data.shapes import ShapesConfig, generate_shapes_world
    from align.resolve import resolve_config

    cfg = resolve_config(
        ShapesConfig,
        recipe=config,
        flags={"n": n, "seed": seed, "image_size": image_size, "cooccurrence": cooccurrence},
        overrides=overrides or [],
    )
    from align.files import check_output_target

    check_output_target(out, overwrite)
    counts = generate_shapes_world(cfg, out)
    _print_counts(f"shapes world -> {out}", counts)


def _print_counts(title: str, counts: dict[str, int]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("file / item")
    table.add_column("count", justify="right")
    for key, value in counts.items():
        table.add_row(key, f"{value:,}")
    Console().print(table)
