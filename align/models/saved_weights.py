"""Whether a folder holds weights a loader can use, read from the safetensors headers alone (no tensor data)."""

from __future__ import annotations

import json
from pathlib import Path

MODEL_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILE = "model.safetensors.index.json"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def weights_problem(folder: str | Path) -> str | None:
    """None when `folder` holds a model (`model.safetensors`, the shards its index lists, or `pytorch_model.bin`)
    or a PEFT adapter, and every `.safetensors` file in it and in its subfolders (a PPO run's `value_model/`) holds
    tensors with elements (checkpoint-N folders aside); else what is wrong. An empty tensor is what a ZeRO-3 rank's own copy of a parameter is:
    a file saved from it loads as garbage or not at all."""
    folder = Path(folder)
    files = [folder / name for name in (*MODEL_FILES, *ADAPTER_FILES) if (folder / name).is_file()]
    index = folder / INDEX_FILE
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values()))
        missing = [name for name in shards if not (folder / name).is_file()]
        if missing or not shards:
            return f"{INDEX_FILE} lists shards that are not there ({', '.join(missing[:3]) or 'none listed'})"
        files += [folder / name for name in shards]
    if not files:
        return (f"no model weights ({', '.join((*MODEL_FILES, INDEX_FILE))}) and no adapter "
                f"({ADAPTER_FILES[0]}) were written")
    for path in sorted(folder.rglob("*.safetensors")):
        if any(part.startswith("checkpoint-") for part in path.relative_to(folder).parts):
            continue  # the Trainer's checkpoints: resumed from, not loaded as the result
        problem = _empty_tensors(path)
        if problem:
            return f"{path.relative_to(folder)} {problem}"
    return None


def _empty_tensors(path: Path) -> str | None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        names = list(f.keys())
        empty = [name for name in names if 0 in f.get_slice(name).get_shape()]
    if not names:
        return "holds no tensors"
    if empty:
        return f"holds {len(empty)} empty tensors (e.g. {empty[0]}: unconsolidated ZeRO-3 shards)"
    return None
