"""`align sft` under DeepSpeed ZeRO-2 and ZeRO-3 on a CPU (gloo): 2 ranks under torchrun and a plain single process.

Every run trains the same tiny LLaVA on the same shapes data. Besides the checks of tests/integration/test_sft.py
(the checkpoint loads with plain transformers, what the policy trains changed, the frozen vision tower is
bit-identical), each run must train like 1 process x batch 4 without DeepSpeed (docs/contributing.md, Tests): same losses,
same weights. The runs use AdamW with an epsilon far above every gradient, which makes it SGD with momentum
(update = lr/eps * m, up to |g|/eps ~ 1e-6): linear in the gradients, so rounding differences between a sharded and
an unsharded reduction stay at rounding size. With the usual epsilon the first steps are lr * sign(g), and a
rounding difference in a near-zero gradient would flip a whole lr-sized step.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from launch import align_cli

torch = pytest.importorskip("torch")
pytest.importorskip("deepspeed")

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

FAMILY, POLICY = "llava", "projector+llm"
# 2 steps: the second loss is computed with weights the (sharded) optimizer updated.
SGD_LIKE = ["max_steps=2", "learning_rate=1e6", "adam_epsilon=1e6", "lr_scheduler_type=constant",
            "max_length=512", "save_strategy=no", "logging_steps=1"]
STEP_ARGS = ["per_device_train_batch_size=2", "max_steps=3", "learning_rate=1e-2", "max_length=512",
             "save_strategy=no", "logging_steps=1"]
# name: (processes, --deepspeed, per-device batch); every mode sees 4 rows per optimizer step.
MODES = {
    "zero3-2ranks": (2, "zero3", 2),
    "zero2-2ranks": (2, "zero2", 2),
    "zero2-1process": (1, "zero2", 4),
}


def _in_process(args) -> None:
    from align.cli.main import main

    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        assert exc.code in (0, None), f"align {' '.join(map(str, args))} exited {exc.code}"


@pytest.fixture(scope="module")
def base(tiny_checkpoint):
    return Path(tiny_checkpoint(FAMILY))


@pytest.fixture(scope="module")
def sft_run(base, shapes_world, tmp_path_factory):
    """sft_run(mode) -> output folder of that SGD-like run (mode "plain": 1 process x batch 4, no DeepSpeed);
    each mode runs once per module."""
    done: dict[str, Path] = {}

    def run(mode: str) -> Path:
        if mode not in done:
            out = tmp_path_factory.mktemp(mode) / "out"
            args = ["sft", "--model", base, "--data", shapes_world / "sft.jsonl", "--output-dir", out]
            if mode == "plain":  # no process group, nothing global: in this process, as tests/integration do
                _in_process([*args, "per_device_train_batch_size=4", *SGD_LIKE])
            else:
                nproc, deepspeed, batch = MODES[mode]
                align_cli([*args, "--deepspeed", deepspeed, f"per_device_train_batch_size={batch}", *SGD_LIKE],
                          nproc=nproc)
            done[mode] = out
        return done[mode]

    return run


def _params(path) -> dict:
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=torch.float32)
    return {name: p.detach() for name, p in model.named_parameters()}


@pytest.fixture(scope="module")
def base_params(base):
    return _params(base)


@pytest.fixture(scope="module")
def trainable(base):
    from align.models.freeze import apply_train_policy
    from align.models.load import load_model_and_processor

    model = apply_train_policy(load_model_and_processor(base, dtype="float32")[0], FAMILY, POLICY)
    return {name for name, p in model.named_parameters() if p.requires_grad}


def _file_keys(folder: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        return set(f.keys())


def _losses(out: Path) -> list[float]:
    return [entry["loss"] for entry in json.loads((out / "run.json").read_text())["log_history"] if "loss" in entry]


@pytest.mark.parametrize("mode", sorted(MODES))
def test_zero_run_writes_a_checkpoint_that_trained_only_the_policy(mode, sft_run, base, base_params, trainable):
    from transformers import AutoProcessor

    out = sft_run(mode)
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] and run["policy"] == POLICY and run["global_step"] == 2
    assert not list(out.glob(".final.tmp-*")), "the temporary save folder was left behind"
    assert AutoProcessor.from_pretrained(str(out)).chat_template

    # Whole weights under the base checkpoint's key names (ZeRO-3 gathers its shards; transformers would rename them).
    assert _file_keys(out) == _file_keys(base)
    after = _params(out)
    assert after.keys() == base_params.keys()
    assert all(after[k].shape == base_params[k].shape and after[k].dtype == torch.float32 for k in after)
    changed = {k for k in after if not torch.equal(after[k], base_params[k])}
    assert changed == trainable, (sorted(changed - trainable)[:5], sorted(trainable - changed)[:5])
    vision = [k for k in after if ".vision_tower." in f".{k}"]
    assert vision and not set(vision) & changed  # bit-identical frozen tower


@pytest.mark.parametrize("mode", sorted(MODES))
def test_zero_run_trains_like_one_process_with_the_whole_batch(mode, sft_run, base_params):
    """2 ranks x batch 2 (or 1 process x batch 4) under ZeRO == 1 process x batch 4 without DeepSpeed."""
    out, plain = sft_run(mode), sft_run("plain")
    assert _losses(out) == pytest.approx(_losses(plain), rel=1e-5) and len(_losses(out)) == 2
    after, reference = _params(out), _params(plain)
    largest_step = max((reference[k] - base_params[k]).abs().max().item() for k in reference)
    assert largest_step > 1e-2  # the comparison below is about steps this large
    for name in reference:
        torch.testing.assert_close(after[name] - base_params[name], reference[name] - base_params[name],
                                   atol=1e-5, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


def test_lora_under_zero2_on_two_ranks_merges_into_a_loadable_model(base, shapes_world, base_params, tmp_path,
                                                                    run_cli):
    from transformers import AutoProcessor

    out, merged = tmp_path / "out", tmp_path / "merged"
    align_cli(["sft", "--model", base, "--data", shapes_world / "sft.jsonl", "--output-dir", out,
               "--deepspeed", "zero2", "--train", "lora+projector", *STEP_ARGS], nproc=2)
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and Path(adapter["base_model_name_or_path"]) == base
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    if (out / "merged").exists():  # a stage's merge for the next stage must not be a half-written folder
        assert (out / "merged" / "model.safetensors").is_file()

    result = run_cli("models", "merge", out, "--out", merged)
    assert result.code == 0, result
    assert AutoProcessor.from_pretrained(str(merged)).chat_template
    after = _params(merged)
    assert after.keys() == base_params.keys()
    changed = {k for k in after if not torch.equal(after[k], base_params[k])}
    lora = {f"{target}.weight" for target in adapter["target_modules"]}
    projector = {k for k in after if ".multi_modal_projector." in f".{k}"}
    assert lora and projector and lora <= after.keys()
    # LoRA deltas folded into every targeted LLM linear layer, the projector trained whole, nothing else moved.
    expected = lora | projector
    assert changed == expected, (sorted(changed - expected)[:5], sorted(expected - changed)[:5])
    assert not any(".vision_tower." in f".{k}" for k in changed)


def test_zero3_sharded_lora_stage_saves_its_bare_trainables_and_feeds_the_next_stage(tiny_checkpoint, shapes_world,
                                                                                     tmp_path):
    """LLaVA-NeXT under lora+projector also trains image_newline, a bare tensor the adapter file cannot hold. With
    every parameter sharded (persistence threshold 0: the preset keeps tensors under 10 x hidden size whole on each
    rank) it must be gathered to be saved. The stage's adapter is then merged (one rank, whole weights) and the
    second stage trains on the merged model."""
    from safetensors.torch import load_file

    from align.train.common import resolve_deepspeed

    base = Path(tiny_checkpoint("llava_next"))
    ds = json.loads(Path(resolve_deepspeed("zero3")).read_text())
    ds["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    (tmp_path / "zero3_sharded.json").write_text(json.dumps(ds))
    (tmp_path / "recipe.yaml").write_text("stages:\n"
                                          "  - {name: lora, train: lora+projector, max_steps: 2}\n"
                                          "  - {name: projector, train: projector, max_steps: 1}\n")
    out = tmp_path / "out"
    align_cli(["sft", "--config", tmp_path / "recipe.yaml", "--model", base, "--data", shapes_world / "sft.jsonl",
               "--output-dir", out, "--deepspeed", tmp_path / "zero3_sharded.json", "per_device_train_batch_size=2",
               "learning_rate=1e-2", "max_length=512", "save_strategy=no", "logging_steps=1"], nproc=2)

    first = out / "stages" / "1-lora"
    before = _params(base)
    extra = load_file(str(first / "align_trainables.safetensors"))
    assert set(extra) == {"model.image_newline"}
    newline, untrained = extra["model.image_newline"], before["model.image_newline"]
    assert newline.shape == untrained.shape and not torch.equal(newline, untrained)  # gathered, and trained

    merged = _params(first / "merged")
    assert torch.equal(merged["model.image_newline"], newline)
    assert all(torch.equal(merged[k], before[k]) for k in before if ".vision_tower." in f".{k}")
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] and run["base_model"] == str(first / "merged")
    assert _params(out).keys() == before.keys()
