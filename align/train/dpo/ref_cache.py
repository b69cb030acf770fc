"""Cached reference log-probs (`precompute_ref_log_probs: true`): computed once, reused by every later run.

TRL refuses `precompute_ref_log_probs` for vision datasets, and its cache is keyed by the fingerprint of the
dataset it is given; align gives TRL a dataset of row indices, the same for any data of the same length, so that
key would silently serve one dataset's values to another. Here the key is everything the values depend on:

- the data: the bytes of its files (or the shard sha256s its dataset.json records), every referenced image's
  path, size and modification time, and every pair's token layout (lengths, completion spans, weighted tokens:
  they change with the tokenizer, the chat template, max_length and too_long);
- the reference model: TRL's hash of its weights (`hash_module`, rank 0's under ZeRO-3);
- the settings that change the values: variant, dtype, ddpo's gamma and averaging, the seed of mdpo's crops and
  povid's noise, povid's noise step, TRL's ld_alpha.

The file sits beside the data (`<data folder>/.ref_logps/<key>.safetensors`, or `ref_cache_dir`), written
atomically by the main process; its metadata repeats the key's parts so a stale file can be explained.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CACHE_FOLDER = ".ref_logps"


@dataclass
class RefCache:
    """Where the values live and what they depend on besides the reference model."""

    directory: Path
    data_fingerprint: str
    settings: dict[str, Any] = field(default_factory=dict)

    def key(self, model_hash: str, split: str = "train") -> str:
        parts = {"data": self.data_fingerprint, "model": model_hash, "split": split, **self.settings}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.safetensors"

    def load(self, key: str):
        """{column: float32 [N] tensor}, or None on a miss."""
        from safetensors.torch import load_file

        path = self.path(key)
        return load_file(str(path)) if path.is_file() else None

    def save(self, key: str, values: dict, model_hash: str) -> Path:
        """Write atomically (a temporary name, then a rename)."""
        from safetensors.torch import save_file

        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        meta = {"data": self.data_fingerprint, "model": model_hash,
                **{k: json.dumps(v) for k, v in sorted(self.settings.items())}}
        save_file({k: v.contiguous().float().cpu() for k, v in values.items()}, str(tmp), metadata=meta)
        os.chmod(tmp, 0o644)  # safetensors writes 0600; the cache is as readable as the data beside it
        os.replace(tmp, path)
        return path


def default_directory(data_path: str | Path) -> Path:
    """`<data folder>/.ref_logps`: beside a data file, inside a data folder."""
    path = Path(data_path)
    return (path if path.is_dir() else path.parent) / CACHE_FOLDER


def data_fingerprint(data_path: str | Path, data, processor) -> str:
    """sha256 over the data's files, its images' (path, size, mtime) and every pair's token layout (`data` is the
    loaded `PreferenceData`), plus the tokenizer's vocabulary and chat template."""
    h = hashlib.sha256()
    path = Path(data_path)
    for name, digest in _file_digests(path):
        h.update(f"file\x1f{name}\x1f{digest}\n".encode())
    for value in sorted(_image_files(data)):
        h.update(f"image\x1f{value}\n".encode())
    for layout in data.layouts:
        h.update(repr(layout).encode())
    tokenizer = getattr(processor, "tokenizer", processor)
    vocab = sorted(tokenizer.get_vocab().items())
    h.update(json.dumps(vocab).encode())
    h.update(str(getattr(processor, "chat_template", None) or getattr(tokenizer, "chat_template", "")).encode())
    return h.hexdigest()


def _file_digests(path: Path) -> list[tuple[str, str]]:
    if path.is_file():
        return [(path.name, _sha256_file(path))]
    manifest = path / "dataset.json"
    if manifest.is_file():
        files = json.loads(manifest.read_text()).get("files")
        if isinstance(files, dict) and files:
            return sorted((str(k), str(v)) for k, v in files.items())
    digests = []
    for file in sorted(path.rglob("*")):
        rel = file.relative_to(path)
        if file.is_file() and not any(part.startswith(".") for part in rel.parts) and rel.parts[0] != "images":
            digests.append((rel.as_posix(), _sha256_file(file)))
    return digests


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _image_files(data) -> set[str]:
    """'path size mtime_ns' of every image file the rows reference (bytes images are in the data files already)."""
    from align.data.images import resolve_image

    seen: set[str] = set()
    for record, (origin, row) in zip(data.records, data.origins, strict=True):
        for name in ("images", "corrupted_images"):
            for value in record.get(name) or []:
                resolved = resolve_image(value, data.base_dir, data.image_root, path=origin, row=row, field=name)
                for item in resolved if isinstance(resolved, list) else [resolved]:
                    if isinstance(item, Path):
                        stat = item.stat()
                        seen.add(f"{item} {stat.st_size} {stat.st_mtime_ns}")
    return seen


def cache_settings(args, variant) -> dict:
    """What besides the data and the reference weights changes the cached values of `variant` under `args`."""
    return {"variant": args.variant, "dtype": str(args.dtype), "bf16": bool(args.bf16), "fp16": bool(args.fp16),
            "ld_alpha": args.ld_alpha, **variant.cache_settings(args)}
