"""`align data convert`: a small fixture in each released format (with an awkward but legal row), converted and
checked field by field; format detection and refusal; missing images; ddpo and hsa train on converted data."""

from __future__ import annotations

import io
import json

import pytest

from align.data.io import read_dataset_json, read_records

pytest.importorskip("torch")


def _text(messages, role_index=0):
    return "".join(i["text"] for i in messages[role_index]["content"] if i["type"] == "text")


def _kinds(messages):
    return [i["type"] for i in messages[0]["content"]]


@pytest.fixture
def images(tmp_path, make_image):
    """Three small PNGs under tmp/imgs: a.png, b.png, c.png; and their bytes."""
    colors = {"a": "red", "b": "green", "c": "blue"}
    for name, color in colors.items():
        make_image(tmp_path / "imgs" / f"{name}.png", color=color)
    return {name: (tmp_path / "imgs" / f"{name}.png").read_bytes() for name in colors}


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _json(path, rows):
    path.write_text(json.dumps(rows))
    return path


def _convert(run_cli, source, out, *extra):
    result = run_cli("data", "convert", source, "--out", out, *extra)
    assert result.code == 0, result
    return read_records(out)


def test_rlhfv_parquet_with_embedded_images_gets_diff_spans(run_cli, tmp_path, images):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"ds_name": "RLHF-V-Dataset", "image": {"bytes": images["a"], "path": None}, "idx": 0,
         "text": json.dumps({"question": "Describe the image.", "chosen": "A red square sits on a white table.",
                             "rejected": "A blue square sits on a white table."}),
         "origin_dataset": "x", "origin_split": "{}", "image_path": "a.png"},
        # awkward: the correction only deletes a clause (no replaced segment: [] spans), non-ASCII text
        {"ds_name": "RLHF-V-Dataset", "image": {"bytes": images["b"], "path": None}, "idx": 1,
         "text": json.dumps({"question": "Qu'y a-t-il ?", "chosen": "Un carré vert.",
                             "rejected": "Un carré vert, à côté d'un chat."}),
         "origin_dataset": "x", "origin_split": "{}", "image_path": "b.png"},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rlhfv.parquet")
    out = _convert(run_cli, tmp_path / "rlhfv.parquet", tmp_path / "out")  # auto-detected
    assert read_dataset_json(tmp_path / "out")["method"] == "rlhfv"
    first, second = out
    assert (first["id"], _text(first["prompt"]), _kinds(first["prompt"])) == ("0", "Describe the image.",
                                                                               ["image", "text"])
    chosen, rejected = _text(first["chosen"]), _text(first["rejected"])
    assert [chosen[a:b] for a, b in first["chosen_spans"]] == ["red"]
    assert [rejected[a:b] for a, b in first["rejected_spans"]] == ["blue"]
    assert second["chosen_spans"] == [] and second["rejected_spans"] == []
    assert _text(second["chosen"]) == "Un carré vert."
    assert len(first["images"]) == 1


def test_rlaifv_strips_placeholders(run_cli, tmp_path, images):
    rows = [{"ds_name": "RLAIF-V", "image": "imgs/a.png", "question": "<image>\nWhat is red?", "chosen": "A square.",
             "rejected": "A circle.", "origin_dataset": "x", "origin_split": "{}", "idx": "k-1", "image_path": "a"}]
    (out,) = _convert(run_cli, _jsonl(tmp_path / "rlaifv.jsonl", rows), tmp_path / "out")
    assert (out["id"], _text(out["prompt"]), _text(out["chosen"]), _text(out["rejected"])) == (
        "k-1", "What is red?", "A square.", "A circle.")


def test_vlfeedback_to_sources_then_pairs(run_cli, tmp_path, images):
    def anno(h, e, v):
        return {"Helpfulness": {"Rating": h, "Rationale": "r"}, "Ethical Considerations": {"Rating": e, "Rationale": "r"},
                "Visual Faithfulness": {"Rating": v, "Rationale": "r"}}

    rows = [
        {"id": "svit-1", "prompt": "What is shown?", "img_path": "imgs/a.png", "models": ["m1", "m2", "m3"],
         "completions": [{"model": "m1", "response": "good", "annotations": anno("5", "5", "5")},
                         {"model": "m2", "response": "bad", "annotations": anno("1", "5", "2")},
                         {"model": "m3", "response": "meh", "annotations": anno("3", "5", "4")}]},
        # awkward: the dict-of-lists layout `datasets` makes of a sequence of structs
        {"id": "svit-2", "prompt": "<img>x</img>\nAnd here?", "img_path": "imgs/b.png", "models": ["m1", "m2"],
         "completions": {"model": ["m1", "m2"], "response": ["yes", "no"],
                         "annotations": [anno("4", "4", "4"), anno("2", "4", "2")]}},
    ]
    sources = _convert(run_cli, _jsonl(tmp_path / "vlf.jsonl", rows), tmp_path / "sources")
    assert read_dataset_json(tmp_path / "sources")["kind"] == "source"
    assert sources[1]["question"] == "And here?" and sources[1]["responses"] == ["yes", "no"]
    result = run_cli("build-pairs", "vlfeedback", "--input", tmp_path / "sources", "--out", tmp_path / "pairs")
    assert result.code == 0, result
    pairs = read_records(tmp_path / "pairs")
    got = sorted((_text(p["chosen"]), _text(p["rejected"]), round(p["chosen_score"], 3)) for p in pairs)
    assert got == [("good", "bad", 5.0), ("good", "meh", 5.0), ("meh", "bad", 4.0), ("yes", "no", 4.0)]


def test_povid_and_sharegpt_pairs(run_cli, tmp_path, images):
    povid = [{"id": "COCO_1", "image": "./imgs/a.png",
              "conversations": [{"from": "human", "value": "<image>\nDescribe this image in detail."},
                                {"from": "gpt", "value": "A red square."}],
              "rejected_conversations": [{"from": "human", "value": "<image>\nDescribe this image in detail."},
                                         {"from": "gpt", "value": "A red square and a dog."}]}]
    (out,) = _convert(run_cli, _json(tmp_path / "povid.json", povid), tmp_path / "povid")
    assert (_text(out["prompt"]), _text(out["chosen"]), _text(out["rejected"])) == (
        "Describe this image in detail.", "A red square.", "A red square and a dog.")
    # awkward: a two-round context, the image token after the question
    shared = [{"images": ["imgs/b.png"], "conversations": [
        {"from": "human", "value": "What colour?\n<image>"}, {"from": "gpt", "value": "Green."},
        {"from": "human", "value": "And the shape?"}],
        "chosen": {"from": "gpt", "value": "A square."}, "rejected": {"from": "gpt", "value": "A star."}}]
    (out,) = _convert(run_cli, _json(tmp_path / "share.json", shared), tmp_path / "share")
    assert [m["role"] for m in out["prompt"]] == ["user", "assistant", "user"]
    assert _kinds(out["prompt"]) == ["image", "text"] and _text(out["prompt"]) == "What colour?"


def test_bpo_pairs_every_differently_scored_completion(run_cli, tmp_path, images):
    rows = [{"prompt": "What do you see happening in this image?\n<image>", "image": "imgs/a.png",
             "completions": [{"score": 1, "response": "A red square.", "type": "gt"},
                             {"score": 0, "response": "A red dog.", "type": "llm-hal"},
                             {"score": 0, "response": "Something blurry.", "type": "mllm-hal"}]}]
    out = _convert(run_cli, _json(tmp_path / "bpo.json", rows), tmp_path / "out")
    assert sorted((_text(r["chosen"]), _text(r["rejected"])) for r in out) == [
        ("A red square.", "A red dog."), ("A red square.", "Something blurry.")]  # the two score-0 ones tie
    assert _text(out[0]["prompt"]) == "What do you see happening in this image?"
    assert {json.loads(r["meta"])["rejected_type"] for r in out} == {"llm-hal", "mllm-hal"}


def test_hsa_scores_and_id_images(run_cli, tmp_path, images):
    (tmp_path / "0.jpg").write_bytes(images["a"])  # HSA-DPO's images are {id}.jpg under the image folder
    rows = [{"id": "0", "question": "Describe this image in detail.", "chosen": "A red square.",
             "rejected": "A red square and a cat.", "rejected_score": 0.6},
            # awkward: no chosen_score (HSA-DPO's default use), the score as a string
            {"id": "1", "question": "Describe.", "chosen": "Green.", "rejected": "Purple.", "rejected_score": "2",
             "image": "imgs/b.png"}]
    out = _convert(run_cli, _jsonl(tmp_path / "hsa.jsonl", rows), tmp_path / "out")
    assert [r["rejected_score"] for r in out] == [0.6, 2.0] and all(r.get("chosen_score") is None for r in out)


def test_stic_halva_mdpo(run_cli, tmp_path, images):
    stic = [{"image": "imgs/a.png", "image_corruption": True, "hallu_prompt": "",
             "chosen": [{"role": "user", "content": "<image>\nIllustrate the details of the picture."},
                        {"role": "assistant", "content": "A red square, centred."}],
             "rejected": [{"role": "user", "content": "<image>\nIllustrate the details of the picture."},
                          {"role": "assistant", "content": "A blurry shape."}]}]
    (out,) = _convert(run_cli, _json(tmp_path / "stic.json", stic), tmp_path / "stic")
    assert (_text(out["prompt"]), _text(out["chosen"]), _text(out["rejected"])) == (
        "Illustrate the details of the picture.", "A red square, centred.", "A blurry shape.")
    halva = [{"id": "h1", "image": "imgs/a.png", "question": "<image>\nDescribe the image.", "tag": "closed",
              "correct_answer": "A man is lying on a bed.", "hallucinated_answer": "A dog is lying on a couch.",
              "correct_answer_masked": "A <MASK> man </MASK> is lying on a <MASK> bed </MASK>.",
              "hallucinated_answer_masked": "A <MASK> dog </MASK> is lying on a <MASK> couch </MASK>."}]
    (out,) = _convert(run_cli, _json(tmp_path / "halva.json", halva), tmp_path / "halva")
    chosen, rejected = _text(out["chosen"]), _text(out["rejected"])
    assert chosen == "A man is lying on a bed." and rejected == "A dog is lying on a couch."
    assert [chosen[a:b] for a, b in out["chosen_spans"]] == ["man", "bed"]
    assert [rejected[a:b] for a, b in out["rejected_spans"]] == ["dog", "couch"]
    assert json.loads(out["meta"]) == {"tag": "closed"}
    mdpo = [{"img_path": "imgs/c.png", "chosen": "Blue.", "rejected": "Red.",
             "prompt": "A chat between a curious user and an artificial intelligence assistant. USER: <image>\n"
                       "What colour is the square? ASSISTANT:"}]
    (out,) = _convert(run_cli, _json(tmp_path / "mdpo.json", mdpo), tmp_path / "mdpo")
    assert _text(out["prompt"]) == "What colour is the square?"


def test_hound_frame_folders_llava_rlhf_trl(run_cli, tmp_path, images):
    frames = tmp_path / "videos" / "v1"
    frames.mkdir(parents=True)
    for k in (10, 2, 1):  # awkward: numbered frames sort as numbers
        (frames / f"frame_{k}.png").write_bytes(images["a"])
    hound = [{"id": "v1-q", "video": "v1", "prompt": "<video>\nWhat happens?", "chosen": "A square stays.",
              "rejected": "A square jumps.", "chosen_score": 5, "rejected_score": 2}]
    (out,) = _convert(run_cli, _jsonl(tmp_path / "hound.jsonl", hound), tmp_path / "hound", "--image-root",
                      tmp_path / "videos")
    assert _kinds(out["prompt"]) == ["video", "text"] and (out["chosen_score"], out["rejected_score"]) == (5.0, 2.0)
    assert len(out["images"]) == 1 and len(out["images"][0]) == 3
    rlhf = [{"id": "r1", "image": "imgs/a.png", "preference": "2", "hallucination": True,
             "conversations": [[{"from": "human", "value": "What is this?\n<image>"},
                                {"from": "gpt", "value": "placeholder"}]],
             "output_1": {"from": "llava", "value": "A red circle."},
             "output_2": {"from": "llava", "value": "A red square."}}]
    (out,) = _convert(run_cli, _json(tmp_path / "rlhf.json", rlhf), tmp_path / "rlhf")
    assert (_text(out["chosen"]), _text(out["rejected"]), _text(out["prompt"])) == (
        "A red square.", "A red circle.", "What is this?")
    assert json.loads(out["meta"]) == {"hallucination": True}
    trl = [{"images": [{"bytes": images["b"], "path": None}],
            "prompt": [{"role": "user", "content": [{"type": "image", "text": None},
                                                    {"type": "text", "text": "Colour?"}]}],
            "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "Green."}]}],
            "rejected": [{"role": "assistant", "content": "Red."}]}]  # awkward: string content
    (out,) = _convert(run_cli, _jsonl(tmp_path / "trl.jsonl", [dict(trl[0], images=[
        {"bytes": None, "path": str(tmp_path / "imgs" / "b.png")}])]), tmp_path / "trl", "--image-root", tmp_path)
    assert out["prompt"][0]["content"] == [{"type": "image"}, {"type": "text", "text": "Colour?"}]
    assert _text(out["rejected"]) == "Red."


def test_wrong_format_is_refused_with_what_it_looks_like(run_cli, tmp_path, images):
    rows = [{"image": "imgs/a.png", "chosen": [{"role": "user", "content": "q"},
                                               {"role": "assistant", "content": "a"}],
             "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]}]
    source = _json(tmp_path / "stic.json", rows)
    result = run_cli("data", "convert", source, "--out", tmp_path / "out", "--from", "hsa")
    assert result.code == 2 and "is not hsa data: it has no id, question" in result.err
    assert "it looks like stic (--from stic)" in result.err and not (tmp_path / "out").exists()
    unknown = _jsonl(tmp_path / "x.jsonl", [{"foo": 1}])
    result = run_cli("data", "convert", unknown, "--out", tmp_path / "out")
    assert result.code == 2 and "match no known format" in result.err


def test_missing_image_names_the_row(run_cli, tmp_path, images):
    rows = [{"ds_name": "RLAIF-V", "image": "imgs/a.png", "question": "q", "chosen": "a", "rejected": "b"},
            {"ds_name": "RLAIF-V", "image": "imgs/missing.png", "question": "q", "chosen": "a", "rejected": "b"}]
    result = run_cli("data", "convert", _jsonl(tmp_path / "r.jsonl", rows), "--out", tmp_path / "out")
    assert result.code == 2 and "row 2" in result.err and "missing.png" in result.err
    assert not (tmp_path / "out").exists()
    halva = [{"id": "h", "image": "imgs/a.png", "question": "q", "correct_answer_masked": "<MASK> a </MASK> b",
              "hallucinated_answer_masked": "c d"}]
    result = run_cli("data", "convert", _json(tmp_path / "h.json", halva), "--out", tmp_path / "out")
    assert result.code == 2 and "row 1" in result.err and "hallucinated_answer_masked" in result.err


def test_converted_rlhfv_trains_ddpo_and_converted_hsa_trains_hsa(run_cli, tmp_path, shapes_world, tiny_checkpoint):
    sources = [json.loads(line) for line in (shapes_world / "sources.jsonl").read_text().splitlines()][:4]
    rlhfv, hsa = [], []
    for k, row in enumerate(sources):
        caption = row["caption"]
        wrong = caption.replace(" shape", " thing", 1).replace("There is a", "There is one", 1)
        rlhfv.append({"ds_name": "RLHF-V-Dataset", "image": row["images"][0], "idx": k,
                      "text": json.dumps({"question": "Describe the image.", "chosen": caption, "rejected": wrong})})
        hsa.append({"id": str(k), "question": "Describe the image.", "chosen": caption, "rejected": wrong,
                    "rejected_score": 0.5 + k, "image": row["images"][0]})  # the image named, not {id}.jpg
    for name, rows, variant in (("rlhfv", rlhfv, "ddpo"), ("hsa", hsa, "hsa")):
        _convert(run_cli, _jsonl(tmp_path / f"{name}.jsonl", rows), tmp_path / f"{name}-pairs", "--image-root",
                 shapes_world, "--from", name)
        result = run_cli("dpo", "--variant", variant, "--model", tiny_checkpoint("llava"), "--data",
                         tmp_path / f"{name}-pairs", "--output-dir", tmp_path / f"{name}-run", "max_steps=3",
                         "per_device_train_batch_size=2", "save_strategy=no")
        assert result.code == 0, (name, result)
        record = json.loads((tmp_path / f"{name}-run" / "run.json").read_text())
        assert record["complete"] and record["global_step"] == 3 and record["rows"] == 4


def test_bytes_images_read_back(tmp_path, images, run_cli):
    """Embedded image bytes survive the conversion (the output shards hold the same pixels)."""
    from PIL import Image

    rows = [{"ds_name": "RLAIF-V", "image": {"bytes": images["c"], "path": None}, "question": "q", "chosen": "a",
             "rejected": "b"}]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "r.parquet")
    (out,) = _convert(run_cli, tmp_path / "r.parquet", tmp_path / "out")
    data = out["images"][0]  # read back as the image's bytes
    assert isinstance(data, bytes) and Image.open(io.BytesIO(data)).convert("RGB").getpixel((5, 5)) == \
        Image.open(io.BytesIO(images["c"])).convert("RGB").getpixel((5, 5))
