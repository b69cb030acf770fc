"""Sampling a policy's responses for an on-policy builder, as a dataset of its own (`align iterate`'s first step
in each round): the source rows with a `responses` column, which the builder then judges or corrects.

Resumable as `build-pairs` is: rows are cut into the builder's `chunk_size` chunks, each chunk's responses are
written atomically to a work folder beside the output when done, seeded by (seed, chunk index) alone, so a rerun
skips finished chunks and writes what an uninterrupted run writes. Under a launcher chunk i belongs to rank
i % world_size; rank 0 assembles.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

from align.distributed import rank_and_world, wait_for_everyone
from align.errors import ConfigError, DataError
from align.seeds import derive_seed
from data_builders.base import Builder, Source, chunk_key


def sample_dataset(builder: Builder, rows: Sequence[dict], out: str | Path, image_root: str | Path, seed: int,
                   label: str = "sampling", progress: bool = True) -> Path:
    """Write `rows` with `responses` sampled from the builder's `--model` to the dataset folder `out` (images
    kept as they are: relative paths resolve under `image_root`). Returns `out`."""
    from align.data.io import write_records
    from align.files import atomic_write_text, read_json
    from align.progress import progress_task

    if not builder.on_policy:
        raise ConfigError(f"method '{builder.name}' does not judge the policy's own responses; on-policy methods "
                          "sample them")
    out = Path(out)
    work = out.with_name(f".{out.name}.work")
    work.mkdir(parents=True, exist_ok=True)
    size = builder.config.chunk_size
    n_chunks = (len(rows) + size - 1) // size
    settings_key = json.dumps({"method": builder.name, "settings": builder.config.settings(), "seed": seed},
                              sort_keys=True, default=str)
    paths = [work / f"chunk-{i:06d}-{chunk_key(settings_key, rows[i * size:(i + 1) * size])}.json"
             for i in range(n_chunks)]
    rank, world = rank_and_world()
    root = Path(image_root)
    with progress_task(label, len(rows), "prompts", enabled=progress and rank == 0) as bar:
        for i, path in enumerate(paths):
            chunk = rows[i * size:(i + 1) * size]
            if i % world == rank and not path.is_file():
                sources = [Source(r, out, i * size + j + 1, None, root, random.Random(derive_seed(seed, r["id"])))
                           for j, r in enumerate(chunk)]
                responses = builder.sample_responses(sources, chunk_seed=derive_seed(seed, "sample", i))
                atomic_write_text(path, json.dumps(responses))
            if bar is not None:
                bar.advance(len(chunk))
    wait_for_everyone()
    if rank == 0:
        missing = [i for i, p in enumerate(paths) if not p.is_file()]
        if missing:
            raise DataError(work, f"{len(missing)} sampling chunk(s) unfinished (first: {missing[0]}); rerun to resume")
        sampled = [dict(row, responses=texts) for i, path in enumerate(paths)
                   for row, texts in zip(rows[i * size:(i + 1) * size], read_json(path), strict=True)]
        write_records(out, sampled, kind="source", method=builder.name, images="keep", image_root=root,
                      check_images=False, settings={"sampled_by": builder.config.model, "seed": seed})
        shutil.rmtree(work, ignore_errors=True)
    wait_for_everyone()
    return out
