"""`align plan`: built-in configs against published parameter totals, the CLI table and JSON, a local tiny
checkpoint, the planner against DeepSpeed's own estimators, and bad input as one-line errors."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

# hub id -> (family, published total parameters, where the total is published). "HF page" is the checkpoint's
# Hugging Face model page ("Model size", from its safetensors metadata, three significant digits); where a public
# copy of that figure was found offline it is cited, the others could not be re-checked offline.
PUBLISHED = {
    "llava-hf/llava-1.5-7b-hf": ("llava", 7.06e9, "HF page; 'Parameters: 7.06B' in a public model registry doc"),
    "llava-hf/llava-1.5-13b-hf": ("llava", 13.4e9, "HF page (not re-checked offline)"),
    "llava-hf/llava-v1.6-vicuna-7b-hf": ("llava_next", 7.06e9, "HF page (not re-checked offline)"),
    "Qwen/Qwen2-VL-2B-Instruct": ("qwen2_vl", 2.21e9,
                                  "HF page, mirrored at ai-nexus-293.pages.dev/model/huggingface:qwen:qwen2-vl-2b-instruct"),
    "Qwen/Qwen2-VL-7B-Instruct": ("qwen2_vl", 8.29e9, "HF page (not re-checked offline)"),
    "Qwen/Qwen2.5-VL-3B-Instruct": ("qwen2_5_vl", 3.75e9, "HF page (not re-checked offline)"),
    "Qwen/Qwen2.5-VL-7B-Instruct": ("qwen2_5_vl", 8.29e9, "HF page (not re-checked offline)"),
    "HuggingFaceM4/idefics-9b-instruct": ("idefics", 8.93e9, "HF page (not re-checked offline)"),
    "Salesforce/blip2-opt-2.7b": ("blip2", 3.74e9, "HF page, mirrored at promptlayer.com/models/blip2-opt-27b-3cd6"),
    "Salesforce/instructblip-vicuna-7b": ("instructblip", 7.91e9, "HF page (not re-checked offline)"),
    "facebook/chameleon-7b": ("chameleon", 7.04e9, "HF page (not re-checked offline)"),
    "adept/fuyu-8b": ("fuyu", 9.41e9, "HF page, mirrored at promptlayer.com/models/fuyu-8b"),
    "microsoft/kosmos-2-patch14-224": ("kosmos2", 1.66e9, "HF page (not re-checked offline; the paper says ~1.6B)"),
}
PLAN = ("plan", "--command", "sft", "--gpus", "8", "--offline")


def test_every_published_model_has_a_builtin_config():
    from align.plan.meta import builtin_configs

    assert set(builtin_configs()) == set(PUBLISHED)


@pytest.mark.parametrize("hub_id", sorted(PUBLISHED))
def test_builtin_config_matches_the_published_total(hub_id):
    """Built on the meta device: the family align maps it to, every parameter in a part, parts adding up to the
    total, and the total within 0.5% of the published one."""
    from align.models.families import count_parameters_by_part, family_of, get_family
    from align.plan.meta import build_meta_model, load_plan_config

    family, published, _source = PUBLISHED[hub_id]
    config, source = load_plan_config(hub_id, offline=True)
    assert source == "built-in config"
    assert family_of(config) == family
    model = build_meta_model(config, family)
    parts = count_parameters_by_part(model, get_family(family))
    assert "other" not in parts, f"parameters no part claims: {parts['other']}"
    total = sum(p["total"] for p in parts.values())
    unique = sum({id(p): p.numel() for p in model.parameters()}.values())  # tied weights once
    assert total == unique
    assert abs(total - published) / published < 0.005, (hub_id, total, published)


@pytest.mark.parametrize("hub_id", sorted(PUBLISHED))
def test_cli_table_and_json_for_every_builtin(run_cli, hub_id):
    table = run_cli(*PLAN, "--model", hub_id, "--deepspeed", "zero3")
    assert table.code == 0, table
    assert table.out.startswith(hub_id) and "built-in config" in table.out
    for row in ("trainable weights", "optimizer states", "activations", "checkpointing on", "(checkpointing off)",
                "total", "largest micro-batch", "an estimate"):
        assert row in table.out, row

    result = run_cli(*PLAN, "--model", hub_id, "--json")
    assert result.code == 0, result
    data = json.loads(result.out)
    assert data["parameters"] == pytest.approx(PUBLISHED[hub_id][1], rel=0.005)
    assert 0 < data["trainable_parameters"] <= data["parameters"]
    per_rank = data["per_rank_bytes"]
    assert per_rank["total"] == sum(v for k, v in per_rank.items() if k != "total")
    assert {"trainable_weights", "gradients", "optimizer_states", "frozen_weights", "activations"} <= set(per_rank)
    assert data["activations"]["without_checkpointing"] > data["activations"]["with_checkpointing"] > 0
    assert data["largest_micro_batch"] >= 0
    assert (data["command"], data["gpus"], data["seq_len"], data["dtype"]) == ("sft", 8, 2048, "bf16")


def test_local_folder_reads_only_its_config(run_cli, tiny_checkpoint):
    folder = tiny_checkpoint("llava")
    saved = json.loads((folder / "align_tiny.json").read_text())
    result = run_cli("plan", "--model", folder, "--command", "dpo", "--gpus", "1", "--train", "lora", "--json")
    assert result.code == 0, result
    data = json.loads(result.out)
    assert data["config_source"] == "local folder" and data["family"] == "llava"
    assert data["parameters"] == saved["parameters"]
    assert data["per_rank_bytes"]["reference_model"] == 0  # LoRA: the adapter-disabled policy is the reference


def test_hub_failure_falls_back_to_the_builtin(monkeypatch):
    """Without --offline the hub is asked first; when it fails (here: made to), the built-in copy answers."""
    import align.models.load
    from align.errors import ModelError
    from align.plan.meta import load_plan_config

    asked = []

    def unreachable(model, trust_remote_code=False):
        asked.append(model)
        raise ModelError(f"cannot load a model config from '{model}': connection refused")

    monkeypatch.setattr(align.models.load, "load_config", unreachable)
    config, source = load_plan_config("adept/fuyu-8b")
    assert asked == ["adept/fuyu-8b"] and source == "built-in config" and config.model_type == "fuyu"


def _plan(**settings):
    from align.plan.planner import make_plan
    from align.plan.settings import PlanSettings

    return make_plan(PlanSettings(**{"model": "llava-hf/llava-1.5-7b-hf", "offline": True, **settings})).to_json()


def test_dpo_reference_models():
    """The reference is the starting model (7,063,427,072 parameters x 2 B / 8 under ZeRO-3); none with LoRA or
    cached log-probs. mdpo keeps a third row per pair: 3/2 of dpo's activations."""
    full = _plan(command="dpo", gpus=8, deepspeed="zero3", train="projector+llm")
    assert full["models"]["reference"] == full["parameters"] == 7_063_427_072
    assert full["per_rank_bytes"]["reference_model"] == -(-7_063_427_072 // 8) * 2
    cached = _plan(command="dpo", gpus=8, deepspeed="zero3", train="projector+llm", cached_reference=True)
    assert cached["per_rank_bytes"]["reference_model"] == 0
    mdpo = _plan(command="dpo", gpus=8, deepspeed="zero3", train="projector+llm", variant="mdpo")
    assert mdpo["activations"]["with_checkpointing"] * 2 == full["activations"]["with_checkpointing"] * 3
    zero2 = _plan(command="dpo", gpus=8, deepspeed="zero2", train="projector+llm")
    assert zero2["per_rank_bytes"]["reference_model"] == 7_063_427_072 * 2  # whole on every GPU under ZeRO-2


def test_reward_and_ppo_models():
    """reward: LoRA (align's default) + the scalar head (4096 + 1); ppo adds a frozen reward model and a critic
    with its own LoRA and head, all in CPU memory under zero3_offload."""
    lora = _plan(command="sft", gpus=1, train="lora")["trainable_parameters"]
    reward = _plan(command="reward", gpus=1)
    assert reward["train"] == "lora" and reward["trainable_parameters"] == lora + 4097
    ppo = _plan(command="ppo", gpus=8, deepspeed="zero3_offload")
    assert ppo["models"]["reference"] is None
    assert ppo["models"]["reward_model"] == ppo["parameters"] + 4097
    assert ppo["models"]["critic"]["trainable"] == lora + 4097
    cpu = ppo["cpu_bytes"]
    assert cpu["reward_model"] > 0 and cpu["critic"] > 0
    assert ppo["per_rank_bytes"]["reward_model"] == ppo["per_rank_bytes"]["critic"] == 0


def test_default_policies_are_the_commands_defaults(tmp_path):
    from align.plan.settings import COMMANDS
    from align.train.ppo.settings import AlignPPOConfig
    from align.train.reward.settings import AlignRewardConfig

    reward = AlignRewardConfig(output_dir=str(tmp_path), model="m", data="d")
    ppo = AlignPPOConfig(output_dir=str(tmp_path), model="m", data="d", reward_funcs=["pkg.f"])
    assert COMMANDS["reward"].default_policy == reward.train
    assert COMMANDS["ppo"].default_policy == ppo.train


def _all_trained(deepspeed: str, gpus: int) -> tuple[dict, int, int]:
    data = _plan(command="sft", gpus=gpus, train="all", deepspeed=deepspeed)
    per_rank = data["per_rank_bytes"]
    states = per_rank["total"] - per_rank["activations"]
    assert data["trainable_parameters"] == data["parameters"]
    return data, data["parameters"], states


@pytest.mark.parametrize("gpus", [8, 3])
def test_zero2_agrees_with_deepspeeds_estimator(gpus):
    """`estimate_zero2_model_states_mem_needs(P, gpus, cpu_offload=False)` gives 2P + 18P/N per GPU: 16-bit weights
    whole, then per partition 2 B 16-bit gradients + 4 B fp32 gradients + 4 B fp32 weights + 8 B moments. The
    planner counts 2P + (2 + 12)P/N: it leaves out the fp32 gradient copy (made at the optimizer step), so
    DeepSpeed's figure is the planner's + 4P/N (to rounding: the planner rounds each partition up)."""
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    _, p, states = _all_trained("zero2", gpus)
    _cpu, gpu = estimate_zero2_model_states_mem_needs(p, num_gpus_per_node=gpus, cpu_offload=False)
    assert abs(gpu - (states + 4 * p / gpus)) <= 16 * gpus


def test_zero3_agrees_with_deepspeeds_estimator():
    """`estimate_zero3_model_states_mem_needs(P, L, 8, cpu_offload=False)` gives 4L + 18P/N: the largest layer
    gathered (16-bit weights and gradients) and 18 B per partitioned parameter (2 weights + 4 fp32 gradients +
    12 optimizer). The planner counts 4L + 16P/N (2 + 2 + 12): DeepSpeed's figure is the planner's + 2P/N. L is the
    planner's largest layer, 131,334,144 (the 32064 x 4096 embedding and lm_head), passed to DeepSpeed as is."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    data, p, states = _all_trained("zero3", 8)
    layer = data["models"]["policy"]["largest_layer"]
    assert layer == 32064 * 4096
    _cpu, gpu, layer_memory = estimate_zero3_model_states_mem_needs(p, layer, 8, cpu_offload=False,
                                                                   cpu_offload_params=False)
    assert layer_memory == data["per_rank_bytes"]["gathered_layer"] == 4 * layer
    assert abs(gpu - (states + 2 * p / 8)) <= 16 * 8


def test_zero3_offload_agrees_with_deepspeeds_estimator():
    """With optimizer and params offloaded (zero3_offload), DeepSpeed's estimator gives 4L on the GPU, as the
    planner; in CPU memory (one node, zero.Init) 18P x 1.5 (additional_buffer_factor) for all 8 ranks together,
    where the planner counts 16P: DeepSpeed's figure is 1.5 x (the planner's + 2P)."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    data, p, states = _all_trained("zero3_offload", 8)
    layer = data["models"]["policy"]["largest_layer"]
    cpu, gpu, _ = estimate_zero3_model_states_mem_needs(p, layer, 8, cpu_offload=True, cpu_offload_params=True)
    assert gpu == states == 4 * layer
    assert abs(cpu / 1.5 - (data["cpu_bytes_all_ranks"] + 2 * p)) <= 16 * 8


@pytest.mark.parametrize("args, message", [
    (("--command", "rlhf"), "unknown command 'rlhf'; known: sft, dpo, reward, ppo"),
    (("--command", "dpo", "--variant", "nope"), "unknown variant 'nope'; known variants: dpo"),
    (("--command", "sft", "--variant", "mdpo"), "--variant applies to dpo only"),
    (("--command", "dpo", "--variant", "halva", "--cached-reference"), "variant halva cannot cache"),
    (("--command", "sft", "--deepspeed", "zero4"), "deepspeed: 'zero4' is neither a preset (zero2, zero3, "
                                                   "zero3_offload)"),
    (("--command", "sft", "--gpus", "0"), "gpus must be at least 1"),
    (("--command", "sft", "--dtype", "int8"), "unknown dtype 'int8'; known: bf16"),
    (("--command", "sft", "--train", "qlora"), "train policy 'qlora' is not planned"),
    (("--command", "sft", "--train", "warp"), "unknown train policy 'warp'"),
])
def test_bad_settings_are_one_line_errors(run_cli, args, message):
    result = run_cli("plan", "--model", "llava-hf/llava-1.5-7b-hf", "--gpus", "8", "--offline", *args)
    assert result.code == 2, result
    assert result.err.startswith("error: ") and result.err.count("\n") == 1
    assert message in result.err


def test_bad_models_are_one_line_errors(run_cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    cases = [
        (empty, "has no config.json"),
        ("someone/unknown-vlm", "no config for 'someone/unknown-vlm'"),
        (bert, "model type 'bert' is not a supported family; supported: blip2, chameleon, fuyu, idefics"),
        (tmp_path / "missing" / "deeper", "is neither a checkpoint folder nor a hub id"),
    ]
    for model, message in cases:
        result = run_cli("plan", "--model", model, "--command", "sft", "--gpus", "1", "--offline")
        assert result.code == 2, (model, result)
        assert result.err.count("\n") == 1 and message in result.err, (model, result.err)
    idefics = run_cli("plan", "--model", "HuggingFaceM4/idefics-9b-instruct", "--command", "sft", "--gpus", "1",
                      "--train", "projector", "--offline")
    assert idefics.code == 2 and "policies that apply to idefics:" in idefics.err
