"""Config precedence (defaults < recipe < flags < overrides), type coercion and unknown-key errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from align.errors import ConfigError
from align.resolve import coerce, config_to_dict, parse_overrides, resolve_config


@dataclass
class Optim:
    lr: float = field(default=1e-3, metadata={"help": "learning rate"})
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata={"help": "Adam betas"})


@dataclass
class Demo:
    name: str = field(default="base", metadata={"help": "run name"})
    epochs: int = field(default=1, metadata={"help": "epochs"})
    beta: float = field(default=0.1, metadata={"help": "beta"})
    use_lora: bool = field(default=False, metadata={"help": "LoRA"})
    tags: list[str] = field(default_factory=list, metadata={"help": "tags"})
    mode: Literal["sigmoid", "hinge"] = field(default="sigmoid", metadata={"help": "loss"})
    output_dir: Path | None = field(default=None, metadata={"help": "output"})
    limit: int | None = field(default=None, metadata={"help": "limit"})
    optim: Optim = field(default_factory=Optim, metadata={"help": "optimizer"})

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError("epochs must be >= 1")


def _recipe(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_defaults_when_nothing_given():
    cfg = resolve_config(Demo)
    assert cfg == Demo()


def test_each_layer_wins_over_the_one_before(tmp_path):
    recipe = _recipe(tmp_path, "name: from-recipe\nepochs: 3\nbeta: 0.5\nuse_lora: true\n")
    cfg = resolve_config(Demo, recipe=recipe, flags={"epochs": 4, "beta": None}, overrides=["beta=0.25"])
    assert cfg.name == "from-recipe"  # recipe over default
    assert cfg.epochs == 4  # flag over recipe
    assert cfg.beta == 0.25  # override over recipe (the flag was not given: None)
    assert cfg.use_lora is True


def test_flag_none_never_hides_a_recipe_value(tmp_path):
    recipe = _recipe(tmp_path, "epochs: 7\n")
    assert resolve_config(Demo, recipe=recipe, flags={"epochs": None}).epochs == 7


def test_overrides_are_parsed_to_the_field_type(tmp_path):
    cfg = resolve_config(
        Demo,
        overrides=["epochs=5", "beta=1e-5", "use_lora=yes", "tags=a,b", "mode=hinge", "output_dir=runs/x",
                   "limit=none", "optim.lr=2e-4", "optim.betas=[0.8, 0.95]"],
    )
    assert cfg.epochs == 5 and isinstance(cfg.epochs, int)
    assert cfg.beta == pytest.approx(1e-5)
    assert cfg.use_lora is True
    assert cfg.tags == ["a", "b"]
    assert cfg.mode == "hinge"
    assert cfg.output_dir == Path("runs/x")
    assert cfg.limit is None
    assert cfg.optim.lr == pytest.approx(2e-4) and cfg.optim.betas == (0.8, 0.95)


def test_nested_recipe_merges_with_dotted_override(tmp_path):
    recipe = _recipe(tmp_path, "optim:\n  lr: 0.5\n  betas: [0.1, 0.2]\n")
    cfg = resolve_config(Demo, recipe=recipe, overrides=["optim.lr=0.25"])
    assert cfg.optim.lr == 0.25 and cfg.optim.betas == (0.1, 0.2)


def test_yaml_1e_minus_5_string_is_accepted_as_float(tmp_path):
    # YAML 1.1 reads 1e-5 (no dot) as a string; a float field must still take it.
    cfg = resolve_config(Demo, recipe=_recipe(tmp_path, "beta: 1e-5\n"))
    assert cfg.beta == pytest.approx(1e-5)


def test_unknown_key_lists_valid_keys_and_names_the_source(tmp_path):
    recipe = _recipe(tmp_path, "epoch: 3\n")
    with pytest.raises(ConfigError) as info:
        resolve_config(Demo, recipe=recipe)
    message = str(info.value)
    assert "unknown key 'epoch'" in message
    assert str(recipe) in message
    for valid in ("epochs", "beta", "use_lora", "optim"):
        assert valid in message


def test_unknown_nested_key_is_reported_with_its_dotted_name():
    with pytest.raises(ConfigError, match=r"unknown key 'optim\.momentum'"):
        resolve_config(Demo, overrides=["optim.momentum=0.9"])


def test_all_problems_are_reported_at_once(tmp_path):
    recipe = _recipe(tmp_path, "epochs: many\nbogus: 1\nmode: squared\n")
    with pytest.raises(ConfigError) as info:
        resolve_config(Demo, recipe=recipe, overrides=["beta=high"])
    problems = info.value.problems
    assert len(problems) == 4, problems
    text = " | ".join(problems)
    assert "'epochs'" in text and "'bogus'" in text and "'mode'" in text and "'beta'" in text


def test_wrong_types_are_rejected():
    for bad in (["epochs=1.5"], ["use_lora=maybe"], ["mode=other"], ["epochs=true"]):
        with pytest.raises(ConfigError):
            resolve_config(Demo, overrides=bad)


def test_post_init_rules_become_config_errors():
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        resolve_config(Demo, overrides=["epochs=0"])


def test_malformed_override_and_yaml(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["epochs"])
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve_config(Demo, recipe=_recipe(tmp_path, "epochs: [1,\n"))
    with pytest.raises(ConfigError, match="must be a mapping"):
        resolve_config(Demo, recipe=_recipe(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="not found"):
        resolve_config(Demo, recipe=tmp_path / "missing.yaml")


def test_coerce_unions_prefer_non_string_members():
    assert coerce("3", int | str) == 3
    assert coerce("abc", int | str) == "abc"
    assert coerce("null", int | None) is None


def test_config_to_dict_is_json_friendly():
    data = config_to_dict(resolve_config(Demo, overrides=["output_dir=out"]))
    assert data["output_dir"] == "out" and data["optim"] == {"lr": 1e-3, "betas": [0.9, 0.999]}


def test_trl_config_takes_overrides_through_the_same_path():
    trl = pytest.importorskip("trl")
    cfg = resolve_config(
        trl.DPOConfig,
        overrides=["output_dir=out", "beta=0.2", "bf16=false", "gradient_checkpointing=false",
                   "per_device_train_batch_size=2", "loss_type=[sigmoid]", "report_to=none", "use_cpu=true"],
    )
    assert cfg.beta == pytest.approx(0.2) and cfg.per_device_train_batch_size == 2 and cfg.bf16 is False
    with pytest.raises(ConfigError, match="unknown key 'betaa'"):
        resolve_config(trl.DPOConfig, overrides=["output_dir=out", "betaa=0.2"])


@dataclass
class WithStages:
    stages: list[dict] = field(default_factory=list, metadata={"help": "stages"})


def test_dotted_index_overrides_update_list_items(tmp_path):
    recipe = _recipe(tmp_path, "stages:\n  - {name: a, lr: 1}\n  - {name: b, lr: 2}\n")
    cfg = resolve_config(WithStages, recipe=recipe, overrides=["stages.1.lr=3", "stages.0.extra=x"])
    assert cfg.stages == [{"name": "a", "lr": 1, "extra": "x"}, {"name": "b", "lr": "3"}]
    with pytest.raises(ConfigError, match=r"'stages\.5'.*2 items"):
        resolve_config(WithStages, recipe=recipe, overrides=["stages.5.lr=3"])
