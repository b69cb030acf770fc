"""`align grpo` end to end on tiny models: the log-probs TRL's loss reads are each row's own (flush-left rows mapped
onto TRL's completion grid), a few steps on llava, qwen2_vl and idefics train what they should, a reference with
beta > 0, resume, and bad input stopped in one line before anything trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
FAST = ["max_completion_length=4", "logging_steps=1", "save_strategy=no", "disable_tqdm=true"]
SMALL = ["num_generations=2", "per_device_train_batch_size=4", "gradient_accumulation_steps=1", *FAST]


@pytest.fixture
def reward_module(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # ppo_rewards: the RL tests' reward functions


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_grpo_raises_the_shapes_colour_reward(colour_world, colour_sft, run_cli, tmp_path, seed):
    """recipes/grpo/shapes_color.yaml from the PPO test's SFT checkpoint: 50 generation batches of 64 answers (16
    prompts x 4), 200 steps. A quarter's mean is over 768 answers of a 0/1 reward near 0.4 (standard error about
    0.018, of the difference about 0.025); the measured rise was 0.109 (seed 0) and 0.104 (seed 1) on this CPU,
    so the last quarter must beat the first by 0.05."""
    out = tmp_path / "grpo"
    result = run_cli("grpo", "--config", RECIPES / "grpo" / "shapes_color.yaml", "--model", colour_sft(seed),
                     "--data", colour_world / "colour_qa.jsonl", "--output-dir", out, f"seed={seed}",
                     "disable_tqdm=true")
    assert result.code == 0, result
    curve = json.loads((out / "run.json").read_text())["reward_curve"]
    assert len(curve) == 50  # 200 steps / 4 steps per generation batch
    q = len(curve) // 4
    first, last = sum(curve[:q]) / q, sum(curve[-q:]) / q
    assert last > first + 0.05, (first, last, curve)


def _lora_b(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v for k, v in load_file(str(path)).items() if "lora_B" in k}


def _trainer(checkpoint, data: Path, tmp_path: Path, **settings):
    """An AlignGRPOTrainer over `data` as `run_grpo` builds it, without training."""
    import datasets

    from align.data.collate import ConversationEncoder
    from align.train.grpo.settings import AlignGRPOConfig
    from align.train.grpo.trainer import AlignGRPOTrainer
    from align.train.prompts import load_prompt_data
    from align.train.rewards import load_reward_funcs
    from align.train.run_config import apply_policy_and_report
    from align.train.skeleton import load_starting_model

    cfg = AlignGRPOConfig(model=str(checkpoint), data=str(data), output_dir=str(tmp_path / "out"),
                          reward_funcs=["ppo_rewards:length"], report_to="none", disable_tqdm=True, bf16=False,
                          **{"num_generations": 2, "per_device_train_batch_size": 4, "max_completion_length": 5,
                             **settings})
    prompts = load_prompt_data(cfg.data)
    policy, processor, family = load_starting_model(cfg.model, cfg)
    policy = apply_policy_and_report(policy, family, cfg, cfg.train, "", show=False)
    return AlignGRPOTrainer(model=policy, args=cfg, train_dataset=datasets.Dataset.from_dict({"row": list(range(8))}),
                            prompts=prompts, encoder=ConversationEncoder(processor, family),
                            processing_class=processor, reward_funcs=load_reward_funcs(cfg.reward_funcs))


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "idefics"])
def test_completion_logps_are_each_rows_own(tiny_checkpoint, shapes_world, reward_module, tmp_path, family):
    """The generation batch pads prompts of different lengths (different questions) to one width; the log-probs TRL's
    loss reads must equal a forward of each row alone, unpadded (Qwen2-VL's rope positions and IDEFICS' per-token
    image mask included), at every completion token, and be 0 past each completion's end."""
    trainer = _trainer(tiny_checkpoint(family), shapes_world / "sft.jsonl", tmp_path)
    trainer.model.train()
    rows = [{"row": r} for r in (0, 0, 3, 3)]
    batch = trainer._generate_and_score_completions(rows)
    got = trainer._completion_logps(trainer.model, batch)[0]  # [4, C]
    assert batch["prompt_mask"].sum(dim=1).unique().numel() > 1, "the prompts must differ in length"
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.eval()
    for i, row in enumerate(rows):
        example = trainer.prompts.load(row["row"])
        alone = dict(trainer.encoder.encode([example], add_generation_prompt=True))
        n = int(batch["completion_mask"][i].sum())
        completion = batch["completion_ids"][i, :n]
        p = alone["input_ids"].shape[1]
        alone["input_ids"] = torch.cat([alone["input_ids"], completion[None].cpu()], dim=1)
        alone["attention_mask"] = torch.ones_like(alone["input_ids"])
        for key, value in list(alone.items()):
            if key == "image_attention_mask":  # IDEFICS: answer tokens see the image as the last prompt token does
                alone[key] = torch.cat([value, value[:, -1:].expand(-1, n, -1)], dim=1)
            elif key in ("token_type_ids", "mm_token_type_ids"):  # answer tokens are text
                alone[key] = torch.cat([value, value.new_zeros(1, n)], dim=1)
        alone = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in alone.items()}
        with torch.no_grad():
            logits = model(**alone, use_cache=False).logits[0, p - 1:p - 1 + n].float()  # [n, V]
        want = torch.log_softmax(logits / trainer.temperature, dim=-1).gather(1, completion[:, None]).squeeze(1)
        torch.testing.assert_close(got[i, :n], want, atol=1e-4, rtol=1e-4)
        assert torch.all(got[i, n:] == 0)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "idefics"])
def test_grpo_trains_the_lora_adapter_on_each_family(tiny_checkpoint, shapes_world, reward_module, run_cli, tmp_path,
                                                     family):
    out = tmp_path / "grpo"
    result = run_cli("grpo", "--model", tiny_checkpoint(family), "--data", shapes_world / "sft.jsonl",
                     "--reward-func", "ppo_rewards:length", "--output-dir", out, "max_steps=3",
                     "learning_rate=1e-2", *SMALL)
    assert result.code == 0, result
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] and run["family"] == family and run["global_step"] == 3 and run["policy"] == "lora"
    assert run["reference"] is None and len(run["reward_curve"]) == 3
    logged = [e for e in run["log_history"] if "reward" in e]
    assert logged and all(k in logged[0] for k in ("reward_std", "rewards/ppo_rewards:length/mean", "entropy",
                                                   "completions/mean_length", "clip_ratio/region_mean"))
    policy_b = _lora_b(out / "adapter_model.safetensors")  # LoRA starts with B = 0: non-zero B trained
    assert policy_b and all(v.abs().sum() > 0 for v in policy_b.values())


@pytest.mark.parametrize("family", ["llava_next", "llava_next_video", "qwen2_5_vl", "blip2", "instructblip",
                                    "chameleon", "fuyu", "kosmos2"])
def test_grpo_steps_on_every_other_family(tiny_checkpoint, shapes_world, reward_module, run_cli, tmp_path, family):
    """One update on each remaining family: its encoder, sampling and log-prob head (the logits-based one for
    BLIP-2, InstructBLIP, Chameleon and Kosmos-2) carry a GRPO step, and the adapter trains."""
    out = tmp_path / "grpo"
    result = run_cli("grpo", "--model", tiny_checkpoint(family), "--data", shapes_world / "sft.jsonl",
                     "--reward-func", "ppo_rewards:length", "--output-dir", out, "max_steps=1",
                     "learning_rate=1e-2", *SMALL)
    assert result.code == 0, result
    assert json.loads((out / "run.json").read_text())["family"] == family
    assert any(v.abs().sum() > 0 for v in _lora_b(out / "adapter_model.safetensors").values())


def test_grpo_with_a_kl_term_trains_the_llm_and_leaves_the_vision_tower(tiny_checkpoint, shapes_world,
                                                                         reward_module, run_cli, tmp_path):
    """projector+llm with beta > 0: the reference is a frozen copy of the start; the KL to it is logged (0 at the
    first step, when policy and reference agree, then positive) and the vision tower's weights stay as loaded."""
    from safetensors.torch import load_file

    base = tiny_checkpoint("llava")
    out = tmp_path / "grpo"
    result = run_cli("grpo", "--model", base, "--data", shapes_world / "sft.jsonl", "--reward-func",
                     "ppo_rewards:length", "--output-dir", out, "--train", "projector+llm", "beta=0.1",
                     "max_steps=3", "learning_rate=1e-2", "loss_type=grpo", *SMALL)
    assert result.code == 0, result
    run = json.loads((out / "run.json").read_text())
    assert run["reference"] == str(base)
    kl = [e["kl"] for e in run["log_history"] if "kl" in e]
    assert len(kl) == 3 and kl[0] == pytest.approx(0.0, abs=1e-6) and kl[-1] > 0
    before, after = load_file(str(Path(base) / "model.safetensors")), load_file(str(out / "model.safetensors"))
    vision = [k for k in before if "vision_tower" in k]
    llm = [k for k in before if "language_model" in k and "layers.0." in k]
    assert vision and llm
    assert all(torch.equal(before[k], after[k]) for k in vision)
    assert any(not torch.equal(before[k], after[k]) for k in llm)


def test_grpo_scores_with_a_reward_model_beside_a_function(tiny_checkpoint, pairs, shapes_world, reward_module,
                                                           run_cli, tmp_path):
    """A reward model from `align reward` (weight 0.5) and a reward function (weight 2) score every answer; each is
    logged, and the logged total is their weighted sum."""
    rm = tmp_path / "rm"
    result = run_cli("reward", "--model", tiny_checkpoint("llava"), "--data", pairs / "first4.jsonl", "--output-dir",
                     rm, "max_steps=2", "per_device_train_batch_size=2", "learning_rate=1e-2", "save_strategy=no",
                     "disable_tqdm=true")
    assert result.code == 0, result
    out = tmp_path / "grpo"
    result = run_cli("grpo", "--model", tiny_checkpoint("llava"), "--data", shapes_world / "sft.jsonl",
                     "--reward-model", rm, "--reward-func", "ppo_rewards:length", "--output-dir", out,
                     "reward_model_weight=0.5", "reward_weights=[2.0]", "max_steps=2", *SMALL)
    assert result.code == 0, result
    run = json.loads((out / "run.json").read_text())
    assert run["reward_model"] == str(rm)
    for entry in (e for e in run["log_history"] if "reward" in e):
        model, func = entry["rewards/reward_model/mean"], entry["rewards/ppo_rewards:length/mean"]
        assert model != 0.0
        assert entry["reward"] == pytest.approx(0.5 * model + 2.0 * func, abs=1e-5)


def test_resumed_grpo_ends_where_the_uninterrupted_run_ends(tiny_checkpoint, shapes_world, reward_module, run_cli,
                                                             tmp_path):
    """4 steps in one go (saving checkpoint-2) against a run stopped after checkpoint-2 and resumed: sampling is
    seeded by the step, so both end on the same adapter."""
    import shutil

    from safetensors.torch import load_file

    def run(out, *extra):
        result = run_cli("grpo", "--model", tiny_checkpoint("llava"), "--data", shapes_world / "sft.jsonl",
                         "--reward-func", "ppo_rewards:length", "--output-dir", out, "learning_rate=1e-2",
                         "num_generations=2", "per_device_train_batch_size=4", "max_completion_length=4",
                         "logging_steps=1", "disable_tqdm=true", *extra)
        assert result.code == 0, result

    run(tmp_path / "whole", "max_steps=4", "save_steps=2")
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "whole" / "checkpoint-2", resumed / "checkpoint-2")
    run(resumed, "--resume", "max_steps=4", "save_strategy=no")
    report = json.loads((resumed / "run.json").read_text())
    assert report["resumed_from"] == str(resumed / "checkpoint-2") and report["global_step"] == 4
    whole = load_file(str(tmp_path / "whole" / "adapter_model.safetensors"))
    again = load_file(str(resumed / "adapter_model.safetensors"))
    start = load_file(str(tmp_path / "whole" / "checkpoint-2" / "adapter_model.safetensors"))
    assert whole.keys() == again.keys()
    assert max((whole[k] - start[k]).abs().max().item() for k in whole) > 1e-4  # steps 3-4 moved the adapter
    for key in whole:
        torch.testing.assert_close(again[key], whole[key], msg=key)


@pytest.mark.parametrize("func, message", [
    ("ppo_rewards:raises", "reward function 'ppo_rewards:raises' raised KeyError: 'answer' (rollout batch 0)"),
    ("ppo_rewards:one_short", "reward function 'ppo_rewards:one_short' returned 3 rewards for 4 completions "
                              "(rollout batch 0)"),
    ("ppo_rewards:not_a_number", "ppo_rewards:not_a_number gave nan for completion 0 of rollout batch 0"),
    ("ppo_rewards:missing", "reward_funcs: cannot import 'ppo_rewards:missing'"),
])
def test_a_bad_reward_function_stops_grpo_before_any_update(tiny_checkpoint, shapes_world, reward_module, run_cli,
                                                            tmp_path, func, message):
    out = tmp_path / "out"
    result = run_cli("grpo", "--model", tiny_checkpoint("llava"), "--data", shapes_world / "sft.jsonl",
                     "--reward-func", func, "--output-dir", out, "max_steps=2", *SMALL)
    assert result.code == 2, result
    last = result.err.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last and "Traceback" not in result.err
    assert not (out / "adapter_model.safetensors").exists() and not (out / "run.json").exists()


def test_prompt_rows_without_a_rewards_column_are_named_before_anything_loads(tiny_checkpoint, shapes_world, run_cli,
                                                                              tmp_path):
    """The count reward reads `answer`, which SFT rows do not have: the first such row is named, before the model
    loads."""
    out = tmp_path / "out"
    result = run_cli("grpo", "--model", tmp_path / "no-such-model", "--data", shapes_world / "sft.jsonl",
                     "--reward-func", "align.data.shapes_rewards:count", "--output-dir", out, *SMALL)
    assert result.code == 2, result
    assert (f"{shapes_world / 'sft.jsonl'}, row 1, field 'answer': reward function 'align.data.shapes_rewards:count' "
            "reads the column 'answer', which this row does not set") in result.err
    assert "Traceback" not in result.err and not out.exists()


def test_groups_that_do_not_fill_the_batch_and_missing_images_are_one_line_errors(tiny_checkpoint, shapes_world,
                                                                                  run_cli, tmp_path):
    result = run_cli("grpo", "--model", tiny_checkpoint("llava"), "--data", shapes_world / "rl_count.jsonl",
                     "--reward-func", "align.data.shapes_rewards:count", "--output-dir", tmp_path / "a",
                     "num_generations=3", "per_device_train_batch_size=4", *FAST)
    assert result.code == 2 and "does not divide into groups of num_generations 3" in result.err, result
    rows = [json.loads(line) for line in (shapes_world / "rl_count.jsonl").read_text().splitlines()[:4]]
    rows[2]["images"] = ["images/not_there.png"]
    data = shapes_world / "rl_count_missing.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_cli("grpo", "--model", tiny_checkpoint("llava"), "--data", data, "--reward-func",
                     "align.data.shapes_rewards:count", "--output-dir", tmp_path / "b", *SMALL)
    assert result.code == 2 and f"{data}, row 3" in result.err and "not_there.png" in result.err, result
    assert "Traceback" not in result.err
