"""LLaVA/ShareGPT-style conversation files -> SFT records: exact conversions, videos, errors that name the
row and field, and converted files that pass the SFT contract with real images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.data.formats import FORMATS, convert_llava, detect_format, is_llava_format, load_llava
from align.data.io import load_records, write_records
from align.data.schema import validate_records
from align.errors import DataError


def _text(text: str) -> dict:
    return {"type": "text", "text": text}


IMAGE = {"type": "image"}
VIDEO = {"type": "video"}


def _write_json(path: Path, rows: list) -> Path:
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------ detection


def test_detection_by_the_conversations_column():
    assert is_llava_format(["id", "image", "conversations"])
    assert not is_llava_format(["id", "images", "messages"])
    assert detect_format(["id", "conversations"]) == "llava"
    assert detect_format(["id", "images", "messages"]) is None
    assert FORMATS["llava"].kind == "sft"


# ------------------------------------------------------------------------------------------------ conversions


def test_single_image():
    rows = [{
        "id": "000000033471",
        "image": "coco/train2017/000000033471.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
            {"from": "gpt", "value": "The bus in the image is white and red."},
            {"from": "human", "value": "What feature can be seen on the back of the bus?"},
            {"from": "gpt", "value": "The back of the bus features an advertisement."},
        ],
    }]
    assert list(convert_llava(rows, "llava.json")) == [{
        "id": "000000033471",
        "images": ["coco/train2017/000000033471.jpg"],
        "messages": [
            {"role": "user", "content": [IMAGE, _text("What are the colors of the bus in the image?")]},
            {"role": "assistant", "content": [_text("The bus in the image is white and red.")]},
            {"role": "user", "content": [_text("What feature can be seen on the back of the bus?")]},
            {"role": "assistant", "content": [_text("The back of the bus features an advertisement.")]},
        ],
    }]


def test_multi_image_tokens_stay_where_they_are():
    rows = [{
        "id": 7,
        "image": ["a.png", "b.png", "c.png"],
        "conversations": [
            {"from": "human", "value": "<image>\n<image>\nWhich differs from <image>?"},
            {"from": "gpt", "value": "The second."},
        ],
    }]
    # The newline right after each token goes (chat templates write it); the one before the third stays.
    assert list(convert_llava(rows, "multi.json")) == [{
        "id": "7",
        "images": ["a.png", "b.png", "c.png"],
        "messages": [
            {"role": "user", "content": [IMAGE, IMAGE, _text("Which differs from "), IMAGE, _text("?")]},
            {"role": "assistant", "content": [_text("The second.")]},
        ],
    }]


def test_image_token_at_the_end_of_a_turn():
    rows = [{"id": "x", "image": "a.png", "conversations": [
        {"from": "human", "value": "What is shown?\n<image>"},
        {"from": "gpt", "value": "A bus."},
    ]}]
    assert convert_llava(rows, "f.json")[0]["messages"][0] == {
        "role": "user", "content": [_text("What is shown?\n"), IMAGE]}


def test_text_only():
    rows = [{"id": "t1", "conversations": [
        {"from": "human", "value": "Write a haiku about rain."},
        {"from": "gpt", "value": "Soft rain on the roof"},
    ]}]
    assert list(convert_llava(rows, "text.json")) == [{
        "id": "t1",
        "images": [],
        "messages": [
            {"role": "user", "content": [_text("Write a haiku about rain.")]},
            {"role": "assistant", "content": [_text("Soft rain on the roof")]},
        ],
    }]


def test_system_turn_and_sharegpt_roles():
    rows = [{"id": "s", "image": "a.png", "conversations": [
        {"from": "system", "value": "You are a careful assistant."},
        {"from": "user", "value": "<image>\nDescribe it."},
        {"from": "assistant", "value": "A red circle."},
    ]}]
    assert list(convert_llava(rows, "sharegpt.json")) == [{
        "id": "s",
        "images": ["a.png"],
        "messages": [
            {"role": "system", "content": [_text("You are a careful assistant.")]},
            {"role": "user", "content": [IMAGE, _text("Describe it.")]},
            {"role": "assistant", "content": [_text("A red circle.")]},
        ],
    }]


def test_ids_fall_back_to_the_row_number(tmp_path):
    turns = [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]
    path = _write_json(tmp_path / "ids.json", [
        {"id": "first", "conversations": turns},
        {"conversations": turns},
        {"id": "", "conversations": turns},
    ])
    assert [r["id"] for r in load_llava(path)] == ["first", "2", "3"]
    # JSONL rows are numbered by line, blank lines included, as everywhere else.
    jsonl = tmp_path / "ids.jsonl"
    jsonl.write_text("\n".join(["", json.dumps({"conversations": turns})]) + "\n", encoding="utf-8")
    assert [r["id"] for r in load_llava(jsonl)] == ["2"]


# ------------------------------------------------------------------------------------------------ videos


def test_video_as_a_list_of_frames():
    rows = [{"id": "v", "video": ["clip/0.jpg", "clip/1.jpg"], "conversations": [
        {"from": "human", "value": "<video>\nWhat happens?"},
        {"from": "gpt", "value": "A ball rolls."},
    ]}]
    assert list(convert_llava(rows, "video.json")) == [{
        "id": "v",
        "images": [["clip/0.jpg", "clip/1.jpg"]],
        "messages": [
            {"role": "user", "content": [VIDEO, _text("What happens?")]},
            {"role": "assistant", "content": [_text("A ball rolls.")]},
        ],
    }]


def test_video_folder_frames_in_natural_order(tmp_path, make_image):
    for name in ("frame_10.png", "frame_2.png", "frame_1.png"):
        make_image(tmp_path / "clips" / "c1" / name)
    (tmp_path / "clips" / "c1" / "notes.txt").write_text("not a frame")
    rows = [{"id": "v", "video": "clips/c1", "conversations": [
        {"from": "human", "value": "<image>\nWhat happens?"},  # LLaVA-NeXT-Video marks the video with <image>
        {"from": "gpt", "value": "Nothing."},
    ]}]
    record = load_llava(_write_json(tmp_path / "v.json", rows))[0]
    assert record["images"] == [["clips/c1/frame_1.png", "clips/c1/frame_2.png", "clips/c1/frame_10.png"]]
    assert record["messages"][0]["content"] == [VIDEO, _text("What happens?")]
    assert validate_records([record], "sft", "v.json", base_dir=tmp_path) == 1


def test_image_and_video_in_one_row_keep_placeholder_order():
    rows = [{"id": "m", "image": "a.png", "video": ["f0.png", "f1.png"], "conversations": [
        {"from": "human", "value": "Compare <video> with <image>."},
        {"from": "gpt", "value": "Same colour."},
    ]}]
    record = convert_llava(rows, "m.json")[0]
    assert record["images"] == [["f0.png", "f1.png"], "a.png"]
    assert record["messages"][0]["content"] == [_text("Compare "), VIDEO, _text(" with "), IMAGE, _text(".")]


# ------------------------------------------------------------------------------------------------ errors

GOOD = [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A."}]


@pytest.mark.parametrize(
    ("row", "field", "problem"),
    [
        ({"image": "a.png", "conversations": [GOOD[0], {"from": "bing", "value": "A."}]},
         "conversations[1].from", "unknown role 'bing'; expected one of human, user, gpt, assistant, system"),
        ({"image": "a.png", "conversations": [GOOD[0], {"from": "human", "value": "again?"}, GOOD[1]]},
         "conversations[1].from", "turn 1 is a user turn where an assistant turn was expected"),
        ({"conversations": [{"from": "gpt", "value": "Hi."}, {"from": "human", "value": "Hi?"}]},
         "conversations[0].from", "turn 0 is an assistant turn where a user turn was expected"),
        ({"image": "a.png", "conversations": [*GOOD, {"from": "system", "value": "Late."}]},
         "conversations[2].from", "a system turn is only allowed as the first turn"),
        ({"image": "a.png", "conversations": [*GOOD, {"from": "human", "value": "More?"}]},
         "conversations[2]", "ends with a user turn that has no assistant reply"),
        ({"conversations": [{"from": "system", "value": "Only rules."}]},
         "conversations", "no user or assistant turn"),
        ({"image": "a.png", "conversations": [GOOD[0], {"from": "gpt", "value": "  \n"}]},
         "conversations[1].value", "empty 'gpt' turn"),
        ({"image": "a.png", "conversations": [GOOD[0], {"from": "gpt", "value": None}]},
         "conversations[1].value", "expected a string, got NoneType"),
        ({"image": "a.png", "conversations": [GOOD[0], "A."]},
         "conversations[1]", "expected a turn {'from', 'value'}, got str"),
        ({"image": "a.png"}, "conversations", "expected a non-empty list of turns"),
        ({"image": "a.png", "conversations": []}, "conversations", "expected a non-empty list of turns"),
        ({"image": ["a.png", "b.png"], "conversations": GOOD},
         "image", "1 <image> token(s) in the conversation but 2 image(s)"),
        ({"conversations": GOOD}, "image", "1 <image> token(s) in the conversation but 0 image(s)"),
        ({"image": "a.png", "conversations": [{"from": "human", "value": "Q?"}, GOOD[1]]},
         "image", "0 <image> token(s) in the conversation but 1 image(s)"),
        ({"image": "a.png", "conversations": [GOOD[0], {"from": "gpt", "value": "See <image>"}]},
         "conversations[1].value", "token in an assistant turn"),
        ({"image": 3, "conversations": GOOD}, "image", "expected an image path or a list of image paths"),
        ({"video": ["f.png"], "conversations": [{"from": "human", "value": "<video><video>Q"}, GOOD[1]]},
         "video", "2 <video> token(s) for videos in the conversation but 1 video(s)"),
        ({"video": "clip.mp4", "conversations": [{"from": "human", "value": "<video>Q"}, GOOD[1]]},
         "video", "video files are not decoded here"),
        ({"video": "missing", "conversations": [{"from": "human", "value": "<video>Q"}, GOOD[1]]},
         "video", "video folder 'missing' not found"),
        ({"video": "../outside", "conversations": [{"from": "human", "value": "<video>Q"}, GOOD[1]]},
         "video", "resolves outside its root"),
        ({"video": [], "conversations": [{"from": "human", "value": "<video>Q"}, GOOD[1]]},
         "video", "expected a folder of frames or a non-empty list of frame paths"),
    ],
)
def test_errors_name_file_row_and_field(tmp_path, row, field, problem):
    (tmp_path / "outside").mkdir()
    (tmp_path / "data").mkdir()
    ok = {"id": "ok", "image": "a.png", "conversations": GOOD}
    path = _write_json(tmp_path / "data" / "llava.json", [ok, ok | {"id": "ok2"}, row])
    with pytest.raises(DataError) as info:
        load_llava(path)
    error = info.value
    assert (error.row, error.field) == (3, field)
    assert problem in error.problem
    assert str(error).startswith(f"{path}, row 3, field '{field}': ")


def test_a_row_that_is_not_an_object():
    with pytest.raises(DataError, match="row 2: expected a JSON object, got list"):
        convert_llava([{"conversations": GOOD, "image": "a.png"}, ["x"]], "f.json")


# ------------------------------------------------------------------------------------------------ contract


def test_converted_file_passes_the_sft_contract_with_real_images(tmp_path, make_image):
    make_image(tmp_path / "coco" / "a.png", size=(64, 48))
    make_image(tmp_path / "coco" / "b.png", color="blue")
    make_image(tmp_path / "frames" / "0.png")
    make_image(tmp_path / "frames" / "1.png", color="green")
    rows = [
        {"id": "one", "image": "coco/a.png", "conversations": GOOD},
        {"id": "two", "image": ["coco/a.png", "coco/b.png"], "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "<image>\n<image>\nSame colour?"},
            {"from": "gpt", "value": "No."},
            {"from": "human", "value": "Which is blue?"},
            {"from": "gpt", "value": "The second."},
        ]},
        {"id": "text", "conversations": [{"from": "user", "value": "2+2?"}, {"from": "assistant", "value": "4"}]},
        {"id": "clip", "video": "frames", "conversations": [
            {"from": "human", "value": "<video>\nWhat changes?"}, {"from": "gpt", "value": "The colour."}]},
    ]
    path = _write_json(tmp_path / "llava.json", rows)
    records = load_llava(path)
    assert records.base_dir == tmp_path and records.origins == [(path, n) for n in (1, 2, 3, 4)]
    assert validate_records(records, "sft", path, check_images=True) == 4

    # Written as a dataset folder and read back, the records are unchanged apart from copied image paths.
    out = write_records(tmp_path / "out", records, kind="sft")
    back = load_records(out, kind="sft")
    assert [r["messages"] for r in back] == [r["messages"] for r in records]
    assert [len(r["images"]) for r in back] == [1, 2, 0, 1] and len(back[3]["images"][0]) == 2


def test_image_root_resolves_video_folders(tmp_path, make_image):
    make_image(tmp_path / "media" / "clip" / "1.png")
    (tmp_path / "ann").mkdir()
    path = _write_json(tmp_path / "ann" / "v.json", [
        {"id": "v", "video": "clip", "conversations": [
            {"from": "human", "value": "<video>Q"}, {"from": "gpt", "value": "A"}]},
    ])
    records = load_llava(path, image_root=tmp_path / "media")
    assert records[0]["images"] == [["clip/1.png"]]
    assert validate_records(records, "sft", path, image_root=tmp_path / "media") == 1
