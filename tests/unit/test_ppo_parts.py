"""PPO's pieces without a model: response masks, flush-left rollout rows, per-row splitting, reward checks and
LLaVA-RLHF's correctness bonus."""

from __future__ import annotations

import math

import pytest
import torch

from align.errors import RewardError
from align.train.ppo.rewards import correctness_bonus, shapes_color
from align.train.rewards import call_reward_func, load_reward_funcs
from align.train.rollout import response_mask, split_rows, stack_rows, training_sequences

PAD, EOS = 0, 9


def test_response_mask_stops_at_the_first_eos():
    ids = torch.tensor([[5, EOS, 7, EOS], [5, 6, 7, 8], [EOS, 1, 1, 1]])
    mask, has_eos = response_mask(ids, [EOS, 42])
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert has_eos.tolist() == [True, False, True]


def test_training_sequences_are_flush_left_with_the_response_marked():
    """Prompts left-padded (row 0 has 1 pad), responses right-padded: each row becomes [prompt | response | pad];
    token_type_ids follow the roll and are 0 over the response; pixel values are untouched."""
    prompt = {
        "input_ids": torch.tensor([[PAD, 11, 12], [21, 22, 23]]),
        "attention_mask": torch.tensor([[0, 1, 1], [1, 1, 1]]),
        "token_type_ids": torch.tensor([[0, 1, 1], [1, 1, 1]]),
        "pixel_values": torch.ones(2, 3, 4, 4),
    }
    completion = torch.tensor([[31, EOS, 5], [41, 42, EOS]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    batch = training_sequences(prompt, completion, mask, PAD)
    assert batch["input_ids"].tolist() == [[11, 12, 31, EOS, PAD, PAD], [21, 22, 23, 41, 42, EOS]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]
    assert batch["action_mask"].tolist() == [[0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1]]
    assert batch["token_type_ids"].tolist() == [[1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]]
    assert batch["pixel_values"] is prompt["pixel_values"]


def test_training_sequences_trim_columns_no_row_uses():
    prompt = {"input_ids": torch.tensor([[PAD, PAD, 11], [PAD, 21, 22]]),
              "attention_mask": torch.tensor([[0, 0, 1], [0, 1, 1]])}
    batch = training_sequences(prompt, torch.tensor([[EOS, 5], [EOS, 5]]), torch.tensor([[1, 0], [1, 0]]), PAD)
    assert batch["input_ids"].tolist() == [[11, EOS, PAD], [21, 22, EOS]]


def test_split_rows_slices_images_by_row_and_stack_rows_pads_tokens():
    """Row 0 has no image, row 1 two: 2 rows and 2 images, so only the field names tell per-row from per-image."""
    batch = {"input_ids": torch.tensor([[1, 2, 3], [4, 5, 6]]), "pixel_values": torch.stack([torch.zeros(3),
                                                                                            torch.ones(3)]),
             "image_sizes": torch.tensor([[8, 8], [16, 16]]), "old_logprobs": torch.tensor([[0.25, 0.5], [0.75, 1.0]])}
    rows = split_rows(batch, 2, [0, 2], row_keys=["old_logprobs"])
    assert rows[0]["pixel_values"].shape[0] == 0 and rows[1]["pixel_values"].shape[0] == 2
    assert rows[1]["image_sizes"].tolist() == [[8, 8], [16, 16]]
    assert rows[1]["input_ids"].tolist() == [[4, 5, 6]]
    short = {"input_ids": torch.tensor([[7]]), "pixel_values": torch.zeros(1, 3), "image_sizes": torch.tensor([[4, 4]]),
             "old_logprobs": torch.zeros(1, 0)}
    stacked = stack_rows([rows[1], short], PAD, ["input_ids", "old_logprobs"])
    assert stacked["input_ids"].tolist() == [[4, 5, 6], [7, PAD, PAD]]
    assert stacked["old_logprobs"].tolist() == [[0.75, 1.0], [0.0, 0.0]]
    assert stacked["pixel_values"].shape[0] == 3


def test_split_rows_qwen_patches_follow_the_grid():
    grid = torch.tensor([[1, 2, 2], [1, 2, 1]])  # 4 and 2 patches
    batch = {"input_ids": torch.zeros(2, 3, dtype=torch.long), "pixel_values": torch.arange(6).unsqueeze(1),
             "image_grid_thw": grid}
    rows = split_rows(batch, 2, [1, 1])
    assert rows[0]["pixel_values"].flatten().tolist() == [0, 1, 2, 3]
    assert rows[1]["pixel_values"].flatten().tolist() == [4, 5]


def test_split_rows_fuyu_pixels_follow_each_rows_placeholders():
    """Fuyu: one pixel row per image placeholder token (id 9 here), all examples' rows concatenated: 3 and 1."""
    batch = {"input_ids": torch.tensor([[9, 9, 9, 5], [PAD, 9, 5, 6]]), "pixel_values": torch.arange(4).unsqueeze(1)}
    rows = split_rows(batch, 2, [1, 1], placeholder_id=9)
    assert rows[0]["pixel_values"].flatten().tolist() == [0, 1, 2]
    assert rows[1]["pixel_values"].flatten().tolist() == [3]
    with pytest.raises(ValueError, match="neither per row"):
        split_rows(batch, 2, [1, 1])  # without the placeholder, 4 pixel rows fit neither 2 rows nor 2 images


def test_idefics_image_attention_mask_follows_its_tokens():
    """[B, T, N_img]: rolled with its row, and the response tokens see the image as the prompt's last token does."""
    prompt = {"input_ids": torch.tensor([[PAD, 11], [21, 22]]), "attention_mask": torch.tensor([[0, 1], [1, 1]]),
              "image_attention_mask": torch.tensor([[[0], [1]], [[1], [1]]])}
    batch = training_sequences(prompt, torch.tensor([[EOS], [EOS]]), torch.tensor([[1], [1]]), PAD)
    assert batch["image_attention_mask"][:, :, 0].tolist() == [[1, 1, 0], [1, 1, 1]]
    rows = split_rows(batch, 2, [1, 1])
    assert rows[0]["image_attention_mask"].shape == (1, 3, 1)


def test_split_rows_refuses_fields_of_unknown_layout():
    with pytest.raises(ValueError, match="neither per row"):
        split_rows({"input_ids": torch.zeros(2, 3), "odd": torch.zeros(5)}, 2, [1, 1])


def _ok(prompts, completions, **kw):
    return [float(len(c[0]["content"])) for c in completions]


def _raises(prompts, completions, **kw):
    raise KeyError("answer")


def _short(prompts, completions, **kw):
    return [1.0]


def _nan(prompts, completions, **kw):
    return [1.0, math.nan]


def test_call_reward_func_passes_trl_conversational_completions_and_columns():
    seen = {}

    def spy(prompts, completions, answer, **kw):
        seen.update(prompts=prompts, completions=completions, answer=answer)
        return [1, 2]

    assert call_reward_func("spy", spy, [["p0"], ["p1"]], ["a", "bb"], {"answer": ["x", "y"]}, 3) == [1.0, 2.0]
    assert seen["completions"][1] == [{"role": "assistant", "content": "bb"}]
    assert seen["answer"] == ["x", "y"]


@pytest.mark.parametrize("func, message", [
    (_raises, r"reward function 'f' raised KeyError: 'answer' \(rollout batch 3\)"),
    (_short, r"reward function 'f' returned 1 rewards for 2 completions \(rollout batch 3\)"),
    (_nan, r"f gave nan for completion 1 of rollout batch 3"),
])
def test_call_reward_func_errors_name_the_function_and_batch(func, message):
    with pytest.raises(RewardError, match=message):
        call_reward_func("f", func, [[], []], ["a", "b"], {}, 3)


def test_load_reward_funcs_accepts_both_path_forms_and_names_bad_ones():
    from align.errors import ConfigError

    names = [n for n, _ in load_reward_funcs(["align.train.ppo.rewards.shapes_color",
                                              "align.train.ppo.rewards:shapes_color"])]
    assert names == ["align.train.ppo.rewards.shapes_color", "align.train.ppo.rewards:shapes_color"]
    with pytest.raises(ConfigError, match="cannot import 'align.nowhere.f'"):
        load_reward_funcs(["align.nowhere.f"])
    with pytest.raises(ConfigError, match="is a tuple, not a callable"):
        load_reward_funcs(["align.train.prompts:HIDDEN_COLUMNS"])


def test_correctness_bonus_follows_llava_rlhf():
    assert correctness_bonus("B. A dog.", 3) == 1.0  # B_IN_ABCD
    assert correctness_bonus("The correct option is B.", "B_IN_ABCD") == 1.0
    assert correctness_bonus("A. A cat.", 3) == 0.0
    assert correctness_bonus("No, there is none.", "NO_IN_YESNO") == 0.5
    assert correctness_bonus("Yes.", 6) == -0.5
    assert correctness_bonus("Yes.", 7) == 0.0  # truth Yes: never rewarded
    assert correctness_bonus("Anything", None) == 0.0


def test_shapes_color_pays_only_the_first_colour_named():
    completions = [[{"role": "assistant", "content": "Red"}], "red or blue", "Blue, maybe red", "A circle"]
    assert shapes_color(None, completions, reference=["Red", "Red", "Red", "Red"]) == [1.0, 1.0, 0.0, 0.0]


def _ppo_config(**values):
    from align.train.ppo.settings import AlignPPOConfig

    base = {"output_dir": "out", "reward_funcs": ["align.train.ppo.rewards:shapes_color"]}
    return AlignPPOConfig(**{**base, **values})


def test_ppo_config_defaults_follow_llava_rlhf_and_train_a_lora():
    cfg = _ppo_config()
    assert cfg.train == "lora" and cfg.value_train == "lora"
    assert (cfg.kl_coef, cfg.clip_range, cfg.vf_coef, cfg.gamma, cfg.lam) == (0.1, 0.2, 0.1, 1.0, 1.0)
    assert cfg.steps_per_rollout == 2 * (8 // 8)  # ppo_epochs x rollout / minibatch
    assert _ppo_config(rollout_batch_size=8, per_device_train_batch_size=2, ppo_epochs=3).steps_per_rollout == 12


@pytest.mark.parametrize("values, message", [
    ({"reward_funcs": []}, "no reward: set reward_model"),
    ({"rollout_batch_size": 6, "per_device_train_batch_size": 4}, "must be a multiple of per_device_train_batch_size"),
    ({"rollout_batch_size": 4, "per_device_train_batch_size": 4, "ppo_epochs": 1, "gradient_accumulation_steps": 2},
     "a rollout feeds 1 minibatch steps, not a multiple of gradient_accumulation_steps 2"),
    ({"reward_weights": [1.0, 2.0]}, "reward_weights has 2 entries for 1 reward_funcs"),
    ({"kl_estimator": "k2"}, "kl_estimator must be one of k1, k3"),
    ({"temperature": 0.0}, "temperature must be > 0"),
    ({"gamma": 1.5}, "gamma must be in [0, 1]"),
    ({"value_train": "wings"}, "value_train:"),
])
def test_ppo_config_refuses_settings_that_cannot_run(values, message):
    from align.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        _ppo_config(**values)
    assert message in str(exc.value)


def test_terminal_score_adds_llava_rlhf_terms_by_hand():
    """Two responses, truth No for both (caption_type 6): "No." (2 tokens, EOS) and "Yes, a cat" (4 tokens, no EOS).
    reward func [1, 0.5] x weight 2 = task [2, 1]; length -10 x [2, 4] / 8 = [-2.5, -5]; correctness 2 x [0.5, -0.5]
    = [1, -1]; no-EOS penalty -8 x [0, 1] -> [2 - 2.5 + 1, 1 - 5 - 1 - 8]. reward_scale 10 is not applied here: it
    multiplies the shaped reward, KL penalty included (test_shaped_rewards_scale_the_kl_penalty_too_as_llava_rlhf)."""
    from types import SimpleNamespace

    from align.train.ppo.trainer import AlignPPOTrainer

    args = SimpleNamespace(reward_model_weight=1.0, length_bonus_score=-10.0, length_budget=8, max_new_tokens=16,
                           correct_bonus_score=2.0, penalty_reward_value=-8.0, reward_scale=10.0)
    prompts = SimpleNamespace(columns=lambda rows: {"caption_type": [6, 6]})
    fake = SimpleNamespace(args=args, reward_model=None, prompts=prompts, _rollouts=0,
                           reward_funcs=[("f", lambda prompts, completions, **kw: [1.0, 0.5])], reward_weights=[2.0])
    examples = [SimpleNamespace(messages=[]), SimpleNamespace(messages=[])]
    score, parts = AlignPPOTrainer._terminal_score(fake, [0, 1], examples, ["No.", "Yes, a cat"],
                                                   torch.tensor([2, 4]), torch.tensor([True, False]))
    assert score.tolist() == [0.5, -13.0]
    assert parts["rewards/task"].tolist() == [2.0, 1.0] and parts["rewards/f"].tolist() == [1.0, 0.5]
    assert parts["rewards/correct_bonus"].tolist() == [0.5, -0.5]
