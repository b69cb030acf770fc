"""Every launcher, every way of switching DeepSpeed on, and what a run leaves: whole weights that plain transformers
(or PEFT, for an adapter) loads and generates with.

- `accelerate launch --config_file` with a ZeRO-3 config that leaves `zero3_save_16bit_model` out (accelerate's
  default: false). transformers then writes DeepSpeed's partitioned checkpoint and no model file; align gathers the
  shards itself, and its check of the saved folder would refuse to mark the run complete otherwise.
- The shipped recipes/accelerate/*.yaml, run unchanged on a CPU (align picks gloo and fp32).
- The `deepspeed` launcher, which appends `--local_rank=N` to the arguments.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from launch import align_cli

torch = pytest.importorskip("torch")
pytest.importorskip("deepspeed")
pytest.importorskip("accelerate")

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "accelerate"
STEPS = ["max_steps=2", "per_device_train_batch_size=1", "learning_rate=1e-2", "save_strategy=no",
         "max_length=512"]
# The configuration: ZeRO-3 through accelerate, nothing said about saving (accelerate's default: sharded).
BARE_ZERO3 = """compute_environment: LOCAL_MACHINE
distributed_type: DEEPSPEED
deepspeed_config:
  zero_stage: 3
  zero3_init_flag: true
  offload_optimizer_device: none
  offload_param_device: none
  gradient_accumulation_steps: 1
use_cpu: true
num_machines: 1
num_processes: 2
machine_rank: 0
main_training_function: main
mixed_precision: 'no'
"""


def _generates(model, processor, image) -> str:
    """Greedy answer of `model` to a one-image question (the model loaded; the forward and generate run)."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is there?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=[image], text=prompt, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    return processor.decode(out[0, inputs["input_ids"].shape[1]:])


@pytest.fixture(scope="module")
def image(shapes_world):
    from PIL import Image

    return Image.open(next((shapes_world / "images").iterdir())).convert("RGB")


def _whole_model(out: Path, base: Path):
    """The saved model through plain transformers: every tensor of the base, with its shape, trained ones moved."""
    from safetensors import safe_open
    from transformers import AutoModelForImageTextToText, AutoProcessor

    with safe_open(str(out / "model.safetensors"), framework="pt") as f, \
         safe_open(str(base / "model.safetensors"), framework="pt") as g:
        assert set(f.keys()) == set(g.keys())
        assert all(f.get_slice(k).get_shape() == g.get_slice(k).get_shape() for k in f.keys())
        assert any(not torch.equal(f.get_tensor(k), g.get_tensor(k)) for k in f.keys())
    return AutoModelForImageTextToText.from_pretrained(str(out)), AutoProcessor.from_pretrained(str(out))


def test_accelerate_zero3_config_without_save_flag_writes_whole_weights(tiny_checkpoint, pairs, image, tmp_path):
    base = Path(tiny_checkpoint("llava"))
    config = tmp_path / "zero3.yaml"
    config.write_text(BARE_ZERO3)
    out = tmp_path / "out"
    align_cli(["dpo", "--variant", "dpo", "--model", base, "--data", pairs / "first4.jsonl", "--output-dir", out,
               "--train", "projector+llm", *STEPS], nproc=2, launcher="accelerate", accelerate_config=config)
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] and run["global_step"] == 2
    assert run["deepspeed"] == {"zero_stage": 3, "offload_optimizer": "none", "offload_param": "none",
                                "config": "accelerate config"}
    assert not (out / "global_step2").exists() and not (out / "zero_to_fp32.py").exists()
    model, processor = _whole_model(out, base)
    assert isinstance(_generates(model, processor, image), str)


@pytest.mark.parametrize("recipe", ["zero3", "zero2"])
def test_shipped_accelerate_recipes_train_lora_into_an_adapter_peft_loads(recipe, tiny_checkpoint, pairs, image,
                                                                         tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText, AutoProcessor

    base = Path(tiny_checkpoint("llava"))
    out = tmp_path / "out"
    align_cli(["dpo", "--variant", "dpo", "--model", base, "--data", pairs / "first4.jsonl", "--output-dir", out,
               "--train", "lora", *STEPS], nproc=2, launcher="accelerate",
              accelerate_config=RECIPES / f"{recipe}.yaml")
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] and run["deepspeed"]["zero_stage"] == int(recipe[-1])
    lora_b = {k: v for k, v in load_file(str(out / "adapter_model.safetensors")).items() if "lora_B" in k}
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b.values())  # trained (lora_B starts at zero)
    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(str(base)), str(out))
    assert isinstance(_generates(model, AutoProcessor.from_pretrained(str(out)), image), str)


def test_accelerate_zero3_reward_model_saves_its_weights(tiny_checkpoint, pairs, tmp_path):
    """`align reward` saves through its own `_save`: under the bare ZeRO-3 config it too gets gathered weights."""
    from safetensors.torch import load_file

    config = tmp_path / "zero3.yaml"
    config.write_text(BARE_ZERO3)
    out = tmp_path / "rm"
    align_cli(["reward", "--model", tiny_checkpoint("llava"), "--data", pairs / "first4.jsonl", "--output-dir", out,
               *STEPS], nproc=2, launcher="accelerate", accelerate_config=config)
    assert json.loads((out / "run.json").read_text())["complete"]
    adapter = load_file(str(out / "adapter_model.safetensors"))
    assert adapter and all(v.numel() > 0 for v in adapter.values())
    assert load_file(str(out / "scalar_head.safetensors"))["weight"].abs().sum() > 0


def test_deepspeed_launcher_runs_sft(tiny_checkpoint, shapes_world, image, tmp_path):
    base = Path(tiny_checkpoint("llava"))
    out = tmp_path / "out"
    align_cli(["sft", "--model", base, "--data", shapes_world / "sft.jsonl", "--output-dir", out, "--deepspeed",
               "zero3", *STEPS], nproc=2, launcher="deepspeed")
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] and run["deepspeed"]["zero_stage"] == 3
    assert run["deepspeed"]["config"].endswith("zero3.json")
    model, processor = _whole_model(out, base)
    assert isinstance(_generates(model, processor, image), str)
