"""Recipe kinds and `align validate`: every YAML under recipes/ is checked against its config dataclass.

A recipe's kind is the folder right under `recipes/` (recipes/shapes/default.yaml is a "shapes" recipe); outside a
recipes folder, its parent folder's name. Nothing is loaded but the YAML and the config class: no weights.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from align.errors import ConfigError
from align.registry import import_object
from align.resolve import build_dataclass, check_values, load_yaml

# kind -> "module:ConfigClass"; later commands add theirs.
RECIPE_KINDS: dict[str, str] = {
    "shapes": "align.data.shapes:ShapesConfig",
    "sft": "align.train.sft.settings:AlignSFTConfig",
    "dpo": "align.train.dpo.settings:AlignDPOConfig",
    "reward": "align.train.reward.settings:AlignRewardConfig",
    "ppo": "align.train.ppo.settings:AlignPPOConfig",
    "grpo": "align.train.grpo.settings:AlignGRPOConfig",
    "pairs": "data_builders:config_for_recipe",
    "iterate": "align.iterate.settings:IterateConfig",
}

_DEVICE_FLAGS = ("bf16", "fp16", "tf32")

# recipes/accelerate/ holds `accelerate launch --config_file` files: checked by accelerate's own reader, plus what
# align needs of them (mixed precision is align's `bf16` setting, so the launcher's must be 'no').
ACCELERATE_KIND = "accelerate"

# DeepSpeed JSON configs live in recipes/deepspeed/ and are checked for what every launcher needs.
_DEEPSPEED_REQUIRED = ("zero_optimization", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")


@dataclass
class ValidationReport:
    checked: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def config_class(kind: str):
    target = RECIPE_KINDS.get(kind)
    if target is None:
        return None
    return import_object(target)


def recipe_kind(path: Path) -> str:
    parts = path.resolve().parts
    if "recipes" in parts[:-1]:
        index = len(parts) - 1 - parts[::-1].index("recipes")
        if index + 1 < len(parts) - 1:
            return parts[index + 1]
    return path.resolve().parent.name


def check_recipe(path: Path, kind: str | None = None) -> list[str]:
    """All problems with one recipe file (empty list when it is valid)."""
    if path.suffix == ".json":
        return _check_deepspeed_json(path)
    kind = kind or recipe_kind(path)
    if kind == ACCELERATE_KIND:
        return _check_accelerate_yaml(path)
    cls = config_class(kind)
    if cls is None:
        return [f"{path}: no config kind '{kind}' (from its folder); known: {', '.join(sorted(RECIPE_KINDS))}"]
    try:
        values = load_yaml(path)
        if not isinstance(cls, type):  # a kind whose class depends on the recipe (pairs: its `method`)
            cls = cls(values)
    except ConfigError as exc:
        return [f"{path}: {exc}" if str(path) not in str(exc) else str(exc)]
    problems = check_values(cls, values, source=str(path))
    if not problems:
        fields = {f.name for f in dataclasses.fields(cls)}
        # A recipe written for GPUs (bf16: true) is valid on a CPU-only machine too: transformers' device checks
        # are not recipe problems, so mixed precision is switched off for this construction only.
        constructed = {**values, **{k: False for k in _DEVICE_FLAGS if k in fields}}
        try:
            build_dataclass(cls, constructed, source=str(path))  # cross-field rules in __post_init__
        except ConfigError as exc:
            problems.extend(exc.problems)
    return problems


def _check_deepspeed_json(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        return [f"{path}, line {exc.lineno}: not valid JSON: {exc.msg}"]
    if not isinstance(data, dict):
        return [f"{path}: a DeepSpeed config must be a JSON object"]
    missing = [k for k in _DEEPSPEED_REQUIRED if k not in data]
    return [f"{path}: missing DeepSpeed key '{k}'" for k in missing]


def _check_accelerate_yaml(path: Path) -> list[str]:
    from accelerate.commands.config.config_args import ClusterConfig

    try:
        config = ClusterConfig.from_yaml_file(str(path))
    except Exception as exc:  # accelerate raises ValueError/TypeError/yaml errors for a bad file
        return [f"{path}: not an accelerate config: {' '.join(str(exc).split())}"]
    problems = []
    if str(config.mixed_precision) != "no":
        problems.append(f"{path}: mixed_precision must be 'no' (align sets precision with `bf16`), got "
                        f"'{config.mixed_precision}'")
    if str(config.distributed_type).endswith("DEEPSPEED"):
        stage = (config.deepspeed_config or {}).get("zero_stage")
        if stage not in (0, 1, 2, 3):
            problems.append(f"{path}: deepspeed_config.zero_stage must be 0-3, got {stage!r}")
    return problems


def recipe_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in {".yaml", ".yml", ".json"} and p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"no such file or folder: {path}")
    return files


def validate_paths(paths: list[Path], kind: str | None = None) -> ValidationReport:
    """Check every recipe under `paths` (recursively) and collect all problems, not just the first."""
    report = ValidationReport()
    for path in recipe_files(paths):
        report.checked.append(path)
        report.problems.extend(check_recipe(path, kind))
    return report
