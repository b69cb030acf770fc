"""The pair-building pipeline: read sources -> build -> validate -> write, resumable and deterministic.

Sources are cut into chunks of `chunk_size` rows in input order. Each finished chunk is written atomically to a
work folder beside the output (`.OUT.work/chunk-000007-<key>.json`): its pairs, and how many rows it read and
skipped and why. The key hashes the builder's settings and the chunk's source rows (`chunk_key`), so a rerun after
Ctrl-C or kill -9 skips exactly the finished chunks whose inputs are unchanged: no pair is lost or duplicated, and
a row fixed or a caption changed since rebuilds its chunk instead of bringing back the old pairs. Every row's
randomness comes from (seed, method, row id), and generation is seeded per chunk, so output does not depend on
where a run stopped. Under `torchrun` / `accelerate launch`, chunk i belongs to rank i % world_size and each
rank writes its own chunks; rank 0 then waits for all of them and assembles them in chunk order, which is exactly
what a single process writes. Only then is the output folder renamed into place and the work folder removed.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from align.distributed import rank_and_world, wait_for_everyone
from align.errors import ConfigError, DataError
from align.seeds import derive_seed
from data_builders.build_settings import BuildConfig


@dataclass
class Source:
    """One source row, with where it came from (for errors) and its own random stream."""

    record: dict
    origin: Any
    row: int
    base_dir: Path | None
    image_root: Path | None
    rng: random.Random

    @property
    def id(self) -> str:
        return str(self.record["id"])

    def load_images(self) -> list:
        """PIL images (a video as a list of frames), decoded in full."""
        from align.data.images import load_media

        return [load_media(v, self.base_dir, self.image_root, path=self.origin, row=self.row, field="images")
                for v in self.record.get("images") or []]


@dataclass
class Built:
    """What a builder made of one source: pairs, or the reason it made none."""

    pairs: list[dict] = field(default_factory=list)
    skipped: str | None = None
    # Other events worth counting in the summary and dataset.json (a judge that failed on one response, ...)
    counts: dict[str, int] = field(default_factory=dict)


class Builder:
    """Base class: a builder turns sources into preference records. Subclasses set the class attributes."""

    name: str = ""
    config_cls: type[BuildConfig] = BuildConfig
    # Source fields the builder needs; a tuple inside means "one of these".
    required: tuple = ()
    needs_model: bool = False
    # Builders that judge the policy's own responses (`samples` per prompt, `prompt` for rows without a
    # question): `align iterate` samples those from each round's policy (`sample_responses`).
    on_policy: bool = False

    def __init__(self, config: BuildConfig):
        self.config = config
        self._generator = None
        self._local_models: dict[str, Any] = {}

    @property
    def generator(self):
        """The generation engine, loaded on first use (model-based builders only)."""
        if self._generator is None:
            from align.models.generate import Generator

            if not self.config.model:
                raise ConfigError(f"method '{self.name}' generates responses: pass --model PATH")
            c = self.config
            self._generator = Generator(c.model, adapter=c.adapter, dtype=c.dtype, batch_size=c.batch_size)
        return self._generator

    def local_model(self, path: str):
        """A generation engine over another local model the builder consults (a judge, labeler, splitter or
        rewriter), loaded on first use and kept for the run."""
        if path not in self._local_models:
            from align.models.generate import Generator

            c = self.config
            self._local_models[path] = Generator(path, dtype=c.dtype, batch_size=c.batch_size)
        return self._local_models[path]

    def prepare(self, records: Sequence[dict], input_info: dict | None = None) -> None:
        """Corpus-level statistics (object frequencies, co-occurrence) from ALL source rows, before any chunk is
        built, so every chunk sees the same tables whether or not the run resumed. `input_info` is the
        `dataset.json` of the input's folder (None without one): what the input says it is."""

    def build(self, sources: Sequence[Source], chunk_seed: int) -> list[Built]:
        """One `Built` per source, in order. Rule-based builders override `build_one`; model-based ones this."""
        return [self.build_one(s) for s in sources]

    def build_one(self, source: Source) -> Built:
        raise NotImplementedError

    def require_model_or_responses(self, records: Sequence[dict]) -> None:
        """For builders that judge several responses per prompt: `--model` samples them, else every row brings at
        least two `responses`."""
        if not self.config.model and not all(isinstance(r.get("responses"), list) and len(r["responses"]) >= 2
                                              for r in records):
            raise ConfigError(f"{self.name} samples responses from --model MODEL; without one, every row needs at "
                              "least two `responses`")

    def responses(self, sources: Sequence[Source], chunk_seed: int, samples: int, default_prompt: str) -> list[list[str]]:
        """Each source's own responses (`own_responses`), or `samples` responses sampled from `--model`
        (temperature, top_p and max_new_tokens from the config) for sources without them, in one batched, seeded
        call per chunk."""
        c = self.config
        out = [own_responses(s.record) for s in sources]
        missing = [i for i, s in enumerate(sources) if not out[i]]
        if missing:
            conversations, media = [], []
            for i in missing:
                record = sources[i].record
                conversations += [record_prompt(record, record.get("question") or default_prompt)] * samples
                media += [sources[i].load_images()] * samples
            texts = self.generator.generate(conversations, media, seed=chunk_seed, max_new_tokens=c.max_new_tokens,
                                            temperature=c.temperature, top_p=c.top_p)
            for n, i in enumerate(missing):
                out[i] = texts[n * samples:(n + 1) * samples]
        return out

    def sample_responses(self, sources: Sequence[Source], chunk_seed: int) -> list[list[str]]:
        """An on-policy builder's `samples` responses per source from `--model` (rows' own responses kept)."""
        return self.responses(sources, chunk_seed, self.config.samples, self.config.prompt)

    def finalize(self, pairs: list[dict]) -> tuple[list[dict], dict[str, int]]:
        """After every chunk, on the assembled pairs in order: a filter that needs them all (RLAIF-V's length
        balancing); returns the pairs kept and counts of those dropped, by reason. Deterministic."""
        return pairs, {}

    def pair(self, source: Source, prompt: list[dict], chosen: str, rejected: str, suffix: str,
             meta: dict, **extra: Any) -> dict:
        """A preference record in the data contract, with method and meta filled in."""
        record = {
            "id": f"{source.id}-{suffix}",
            "images": source.record.get("images") or [],
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": [{"type": "text", "text": chosen}]}],
            "rejected": [{"role": "assistant", "content": [{"type": "text", "text": rejected}]}],
            **extra,
            "method": self.name,
            "meta": json.dumps({"source_id": source.id, **meta}, sort_keys=True),
        }
        return record


def own_responses(record: dict) -> list[str]:
    """A source row's own responses: its `responses` list, or its one `response`; [] without either."""
    if isinstance(record.get("responses"), list):
        return [str(r) for r in record["responses"]]
    if isinstance(record.get("response"), str) and record["response"].strip():
        return [record["response"]]
    return []


def _same_text(pair: dict) -> bool:
    from align.data.messages import completion_text

    return completion_text(pair["chosen"]) == completion_text(pair["rejected"])


DESCRIBE = "Describe this image in detail."  # the user prompt for sources without a question


def user_prompt(text: str, n_images: int = 1, n_videos: int = 0) -> list[dict]:
    media = [{"type": "image"}] * n_images + [{"type": "video"}] * n_videos
    return [{"role": "user", "content": [*media, {"type": "text", "text": text}]}]


def record_prompt(record: dict, text: str) -> list[dict]:
    """A user turn asking `text` with the record's media: an image item per still image, a video item per video
    (an `images` entry that is a list of frames)."""
    media = record.get("images") or []
    videos = sum(isinstance(m, list) for m in media)
    return user_prompt(text, len(media) - videos, videos)


# ------------------------------------------------------------------------------------------- pipeline


@dataclass
class BuildSummary:
    rows_read: int = 0
    pairs_written: int = 0
    skipped: Counter = field(default_factory=Counter)
    out: Path | None = None

    def as_counts(self) -> dict[str, int]:
        counts = {"rows_read": self.rows_read, "pairs": self.pairs_written}
        counts.update({f"skipped_{reason}": n for reason, n in sorted(self.skipped.items())})
        return counts


def _check_required(builder: Builder, records, origins) -> None:
    for record, (origin, row) in zip(records, origins, strict=True):
        for need in builder.required:
            options = need if isinstance(need, tuple) else (need,)
            if not any(record.get(name) not in (None, "", []) for name in options):
                raise DataError(origin, f"method '{builder.name}' needs {' or '.join(options)}", row=row,
                                field=options[0])


def _work_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.work"


def chunk_key(settings_key: str, rows: Sequence[dict]) -> str:
    """What a chunk's pairs depend on: the builder and its settings, and the content of the chunk's source rows.
    A chunk file is reused only under the same key, so fixing a row, changing a caption or a setting rebuilds
    exactly the chunks it touches, and a failed or foreign run's work folder cannot leak into the output."""
    digest = hashlib.sha256(settings_key.encode())
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode())
    return digest.hexdigest()[:16]


def _chunk_path(work: Path, index: int, key: str) -> Path:
    return work / f"chunk-{index:06d}-{key}.json"


def _write_chunk(path: Path, payload: dict) -> None:
    from align.files import atomic_write_text

    atomic_write_text(path, json.dumps(payload, ensure_ascii=False, sort_keys=True, default=_bytes_to_json) + "\n")


def _read_chunk(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"), object_hook=_bytes_from_json)


_BYTES = "__base64_bytes__"


def _bytes_to_json(value: Any) -> Any:
    """Embedded image bytes (a source read from parquet shards) travel through the chunk file as base64."""
    if isinstance(value, (bytes, bytearray)):
        import base64

        return {_BYTES: base64.b64encode(bytes(value)).decode("ascii")}
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _bytes_from_json(obj: dict) -> Any:
    if len(obj) == 1 and _BYTES in obj:
        import base64

        return base64.b64decode(obj[_BYTES])
    return obj


def run_build(builder: Builder, command: str | None = None, progress: bool = True,
              overwrite: bool = False) -> BuildSummary:
    """Build every chunk this rank owns, then (rank 0) assemble and write the output folder. An existing `out`
    that align did not write is refused unless `overwrite`."""
    from align.data.io import input_dataset_info, read_records, write_records
    from align.data.schema import validate_records
    from align.files import check_output_target
    from align.progress import progress_task

    config = builder.config
    if not config.input:
        raise ConfigError("input is required (--input PATH)")
    if not config.out:
        raise ConfigError("out is required (--out DIR)")
    out = Path(config.out)
    check_output_target(out, overwrite)
    records = read_records(config.input, image_root=config.image_root)
    if not records:
        raise DataError(config.input, "has no rows")
    limit = config.limit or len(records)
    origins = records.origins[:limit]
    rows = list(records)[:limit]
    # Images are decoded here, before any work, so a bad one stops the run at once and names its row.
    validate_records(rows, "source", config.input, records.base_dir, config.image_root, True, origins)
    _check_required(builder, rows, origins)
    if builder.needs_model:
        builder.generator  # noqa: B018  (fail on a bad --model before any work)
    builder.prepare(rows, input_dataset_info(config.input))

    rank, world = rank_and_world()
    work = _work_dir(out)
    work.mkdir(parents=True, exist_ok=True)
    n_chunks = (len(rows) + config.chunk_size - 1) // config.chunk_size
    settings_key = json.dumps({"method": builder.name, "settings": config.settings(),
                               "image_root": config.image_root}, sort_keys=True, default=str)
    paths = [_chunk_path(work, i, chunk_key(settings_key, rows[i * config.chunk_size:(i + 1) * config.chunk_size]))
             for i in range(n_chunks)]
    image_root = Path(config.image_root) if config.image_root else None
    mine = [i for i in range(n_chunks) if i % world == rank]
    with progress_task(f"build-pairs {builder.name}", len(rows), "rows", enabled=progress and rank == 0) as bar:
        for i in range(n_chunks):
            size = min(config.chunk_size, len(rows) - i * config.chunk_size)
            path = paths[i]
            if i not in mine or path.is_file():
                _advance(bar, size if path.is_file() or world == 1 else 0)
                continue
            for stale in work.glob(f"chunk-{i:06d}-*.json"):  # this chunk under other content or settings
                stale.unlink()
            lo = i * config.chunk_size
            sources = [Source(rows[j], origins[j][0], origins[j][1], records.base_dir, image_root,
                              random.Random(derive_seed(config.seed, builder.name, rows[j]["id"])))
                       for j in range(lo, lo + size)]
            built = builder.build(sources, chunk_seed=derive_seed(config.seed, builder.name, "chunk", i))
            # Each pair keeps its source's file and row, so an error in it (a bad image) names the source row.
            made = [(p, [str(s.origin), s.row]) for b, s in zip(built, sources, strict=True) for p in b.pairs]
            skipped = Counter(b.skipped for b in built if b.skipped)
            for b in built:
                skipped.update(b.counts)
            kept = [(p, o) for p, o in made if not _same_text(p)]  # a generated rejected can equal the chosen
            if len(kept) < len(made):
                skipped["chosen equals rejected"] += len(made) - len(kept)
            _write_chunk(path, {"read": size, "pairs": [p for p, _ in kept], "origins": [o for _, o in kept],
                                "skipped": dict(skipped)})
            _advance(bar, size)
    wait_for_everyone()
    summary = BuildSummary(out=out)
    if rank != 0:
        return summary
    missing = [i for i in range(n_chunks) if not paths[i].is_file()]
    if missing:
        raise DataError(work, f"{len(missing)} chunk(s) unfinished (first: {missing[0]}); rerun to resume")
    pairs: list[dict] = []
    pair_origins: list[tuple[Path, int]] = []
    for i in range(n_chunks):
        chunk = _read_chunk(paths[i])
        summary.rows_read += chunk["read"]
        summary.skipped.update(chunk["skipped"])
        pairs.extend(chunk["pairs"])
        pair_origins.extend((Path(file), row) for file, row in chunk["origins"])
    kept_index = _finalize(builder, pairs, summary)
    pairs = [pairs[i] for i in kept_index]
    pair_origins = [pair_origins[i] for i in kept_index]
    summary.pairs_written = len(pairs)
    if not pairs:
        raise DataError(config.input, f"method '{builder.name}' made no pairs from {summary.rows_read} rows "
                        f"(skipped: {dict(summary.skipped)})")
    from align.data.io import Records

    pairs = Records(pairs, path=config.input, base_dir=records.base_dir, image_root=config.image_root,
                    origins=pair_origins)
    write_records(out, pairs, kind="preference", method=builder.name, settings=config.settings(),
                  images=config.images, base_dir=records.base_dir, image_root=config.image_root, check_images=False,
                  counts_extra=summary.as_counts(), command=command)
    shutil.rmtree(work, ignore_errors=True)
    return summary


def _finalize(builder: Builder, pairs: list[dict], summary: BuildSummary) -> list[int]:
    """Indices of the pairs `builder.finalize` keeps (pairs are matched by identity, so origins follow)."""
    kept, dropped = builder.finalize(list(pairs))
    summary.skipped.update(dropped)
    position = {id(p): i for i, p in enumerate(pairs)}
    return [position[id(p)] for p in kept]


def _advance(task, n: int) -> None:
    """Move the build's progress task by `n` rows, showing the pace since the start."""
    if task is not None and n:
        task.advance(n)
        task.update(task.completed, rate=f"{task.rate():,.0f} rows/s")


def iter_chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
