"""Recipe loading with one precedence: dataclass defaults < recipe YAML < CLI flags < `key=value` overrides.

Any dataclass works as a config, including TRL's (`DPOConfig`, `SFTConfig`), whose fields come from
`transformers.TrainingArguments`. Values from YAML and from overrides are coerced to the field's declared type;
unknown keys and values that do not fit are reported all at once, each naming the key and where it came from.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from align.errors import ConfigError

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


# ----------------------------------------------------------------------------------------------- YAML


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a recipe file; it must hold a mapping (an empty file is an empty mapping)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{where}: not valid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of keys to values, got {type(data).__name__}")
    return data


# ------------------------------------------------------------------------------------------ type logic


def type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # forward references a library never resolved: fall back to the raw annotations
        return {f.name: f.type for f in dataclasses.fields(cls)}


def init_fields(cls: type) -> dict[str, dataclasses.Field]:
    """The fields a user may set: those that go through `__init__`."""
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _describe(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any) -> Any:
    """Convert `value` (from YAML, a flag or an override string) to type `tp`; ValueError when it cannot."""
    if tp is Any or tp is None or isinstance(tp, (str, typing.TypeVar)):
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in {"none", "null", "~"}):
            if type(None) in args:
                return None
        # str last: "3" should become 3 for Union[int, str]; the raw string is the last resort
        ordered = [m for m in members if m is not str] + [m for m in members if m is str]
        errors = []
        for member in ordered:
            try:
                return coerce(value, member)
            except (ValueError, TypeError) as exc:
                errors.append(str(exc))
        raise ValueError(f"expected {_describe(tp)}, got {value!r}")

    if origin is typing.Literal:
        for choice in args:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise ValueError(f"expected one of {', '.join(map(repr, args))}, got {value!r}")

    if origin in (list, tuple, set, Sequence, typing.Sequence) or tp in (list, tuple, set):
        if isinstance(value, str):
            value = _parse_sequence_string(value)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ValueError(f"expected {len(args)} items, got {len(value)}")
            return tuple(coerce(v, a) for v, a in zip(value, args, strict=True))
        inner = args[0] if args else Any
        items = [coerce(v, inner) for v in value]
        return tuple(items) if (origin is tuple or tp is tuple) else set(items) if origin is set else items

    if origin in (dict, Mapping, typing.Mapping) or tp is dict:
        if isinstance(value, str):
            import yaml

            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping, got {value!r}")
        if args:
            return {coerce(k, args[0]): coerce(v, args[1]) for k, v in value.items()}
        return dict(value)

    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping of {tp.__name__} fields, got {value!r}")
        return build_dataclass(tp, value)

    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        try:
            return tp(value)
        except ValueError:
            raise ValueError(f"expected one of {', '.join(repr(m.value) for m in tp)}, got {value!r}") from None

    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError(f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(f"expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError(f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-5` as a string: accept it here
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ValueError(f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"expected a string, got {value!r}")
    if tp is Path or (isinstance(tp, type) and issubclass(tp, Path)):
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ValueError(f"expected a path, got {value!r}")
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise ValueError(f"expected {tp.__name__}, got {value!r}")
    return value


def _parse_sequence_string(text: str) -> list:
    """`a,b,c` or a YAML/JSON list `[1, 2]` from an override string."""
    import yaml

    stripped = text.strip()
    if stripped.startswith("["):
        parsed = yaml.safe_load(stripped)
        if isinstance(parsed, list):
            return parsed
    return [part.strip() for part in stripped.split(",") if part.strip()] if stripped else []


# --------------------------------------------------------------------------------------- building


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"a.b": 1, "c": 2} -> {"a": {"b": 1}, "c": 2}; nested mappings merge."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = str(key).split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"key '{key}' sets a field inside '{part}', which is not a mapping")
        last = parts[-1]
        if isinstance(value, Mapping) and isinstance(node.get(last), dict):
            node[last] = merge(node[last], value)
        else:
            node[last] = dict(value) if isinstance(value, Mapping) else value
    return out


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key; a mapping with integer keys updates a list's items
    (`stages.1.learning_rate=1e-4`); anything else in `update` replaces."""
    out = dict(base)
    for key, value in update.items():
        current = out.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            out[key] = merge(current, value)
        elif isinstance(value, Mapping) and isinstance(current, list) and all(str(k).isdigit() for k in value):
            out[key] = _merge_list(key, current, value)
        else:
            out[key] = value
    return out


def _merge_list(key: str, items: list, update: Mapping[str, Any]) -> list:
    items = list(items)
    for index, value in update.items():
        i = int(index)
        if i >= len(items):
            raise ConfigError(f"key '{key}.{index}': the list has {len(items)} items (indices 0-{len(items) - 1})")
        both_mappings = isinstance(value, Mapping) and isinstance(items[i], Mapping)
        items[i] = merge(items[i], value) if both_mappings else value
    return items


def check_values(cls: type, values: Mapping[str, Any], source: str = "", prefix: str = "") -> list[str]:
    """Every problem with `values` as `cls` fields: unknown keys (listing the valid ones) and wrong types."""
    fields = init_fields(cls)
    hints = type_hints(cls)
    problems: list[str] = []
    where = f"{source}: " if source else ""
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            problems.append(f"{where}unknown key '{dotted}'; valid keys: {', '.join(sorted(fields))}")
            continue
        tp = hints.get(key, Any)
        if _is_dataclass_type(tp) and isinstance(value, Mapping):
            problems.extend(check_values(tp, value, source, prefix=f"{dotted}."))
            continue
        if _is_item_update(tp, value):  # `stages.1.learning_rate=...`: items are checked when merged
            continue
        try:
            coerce(value, tp)
        except (ValueError, TypeError, ConfigError) as exc:
            problems.append(f"{where}key '{dotted}': {exc}")
    return problems


def _is_item_update(tp: Any, value: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_is_item_update(member, value) for member in typing.get_args(tp))
    is_list = origin is list or tp is list
    return is_list and isinstance(value, Mapping) and bool(value) and all(str(k).isdigit() for k in value)


def build_dataclass(cls: type, values: Mapping[str, Any], source: str = ""):
    """Instantiate `cls` from a nested mapping of field values, coercing each to its declared type."""
    problems = check_values(cls, values, source)
    hints = type_hints(cls)
    for key, value in values.items():  # an item update left after merging had no list to update
        if _is_item_update(hints.get(key, Any), value):
            where = f"{source}: " if source else ""
            problems.append(f"{where}key '{key}.{next(iter(value))}' updates an item of '{key}', which is not set "
                            f"(give '{key}' as a list in the recipe first)")
    if problems:
        raise ConfigError(problems)
    kwargs = {key: coerce(value, hints.get(key, Any)) for key, value in values.items()}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        where = f"{source}: " if source else ""
        raise ConfigError(f"{where}{cls.__name__}: {exc}") from None


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """['lr=1e-5', 'a.b=2'] -> {'lr': '1e-5', 'a.b': '2'}; values stay strings until coerced by type."""
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}' is not of the form key=value")
        parsed[key.strip()] = value
    return parsed


def resolve_config(
    cls: type,
    recipe: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
):
    """defaults < recipe YAML < flags (None means 'not given') < `key=value` overrides."""
    layers: list[tuple[str, dict[str, Any]]] = []
    if recipe is not None:
        layers.append((str(recipe), _nest(load_yaml(recipe))))
    if flags:
        layers.append(("command-line flag", _nest({k: v for k, v in flags.items() if v is not None})))
    if overrides:
        layers.append(("override", _nest(parse_overrides(overrides))))

    problems: list[str] = []
    for source, values in layers:
        problems.extend(check_values(cls, values, source))
    if problems:
        raise ConfigError(problems)
    merged: dict[str, Any] = {}
    for _, values in layers:
        merged = merge(merged, values)
    return build_dataclass(cls, merged)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a config (paths and enums as strings), for run.json and dataset.json."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (list, tuple, set)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        return str(value)

    return plain(config)


def field_help(cls: type) -> dict[str, str]:
    """Field name -> its `help` metadata (empty when a field has none)."""
    return {name: f.metadata.get("help", "") for name, f in init_fields(cls).items()}
