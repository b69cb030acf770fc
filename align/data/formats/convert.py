"""`align data convert`: a released dataset file -> a dataset folder of the data contract (preference, SFT or
builder-source records), written atomically with `dataset.json` recording the format and the input."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from align.data.formats import FORMATS, choose_format
from align.data.io import read_records, write_records
from align.errors import DataError


@dataclass
class ConvertSummary:
    format: str
    kind: str
    rows_read: int
    records: int
    images: int
    out: Path


def convert_dataset(input_path: str | Path, out: str | Path, source_format: str = "auto",
                    image_root: str | Path | None = None, images: str = "embed", overwrite: bool = False,
                    command: str | None = None) -> ConvertSummary:
    """Read `input_path` (JSON, JSONL, parquet, a folder of shards or a `datasets` folder), convert every row
    with `source_format` (auto: detected from the columns), check every record and its images, write `out`."""
    from align.files import check_output_target

    check_output_target(out, overwrite)
    rows = read_records(input_path, image_root=image_root)
    if not rows:
        raise DataError(input_path, "has no rows")
    name = choose_format(source_format, rows.columns, input_path)
    fmt = FORMATS[name]
    records = fmt.converter()(rows, input_path, image_root)
    if not records:
        raise DataError(input_path, f"no {fmt.kind} records came out of its {len(rows)} {name} rows")
    write_records(out, records, kind=fmt.kind, method=name,
                  settings={"from": name, "input": str(input_path), "images": images},
                  images=images, image_root=image_root, counts_extra={"rows_read": len(rows)}, command=command)
    n_images = sum(len(r.get("images") or []) for r in records)
    return ConvertSummary(name, fmt.kind, len(rows), len(records), n_images, Path(out))
