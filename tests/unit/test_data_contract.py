"""The data contract: readers, image resolution, validation, the shard writer and `align data show`.

Every validation test writes a bad fixture file and asserts the exact location the error names:
"<file>, row <N>, field '<f>': ...".
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
from pathlib import Path

import pytest

from align.data import io as dio
from align.data.images import load_image, resolve_image
from align.data.schema import (
    completion_text,
    count_placeholders,
    detect_kind,
    validate_record,
    validate_records,
)
from align.data.storage import stored_row
from align.errors import DataError


def png_bytes(color="red", size=(8, 8)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def noisy_png(path: Path, size=(64, 64)) -> Path:
    """A PNG whose pixels do not compress away, so cutting it in half really loses pixel data."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(path)
    return path


def pref(i: int, image="a.png") -> dict:
    return {
        "id": f"r{i}",
        "images": [image],
        "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"What is in {i}?"}]}],
        "chosen": [{"role": "assistant", "content": "A red square on grey."}],
        "rejected": [{"role": "assistant", "content": [{"type": "text", "text": "A blue dog."}]}],
        "chosen_spans": [[2, 12]],
        "rejected_score": 0.5,
        "method": "test",
        "meta": json.dumps({"seed": i}),
    }


@pytest.fixture
def ds(tmp_path, make_image):
    """tmp_path/ds with a.png and b.png, and a helper that writes rows as JSONL there (row N on line N)."""
    folder = tmp_path / "ds"
    make_image(folder / "a.png")
    make_image(folder / "b.png", color="blue")
    make_image(tmp_path / "outside.png")  # beside the dataset folder, not in it

    def write(rows, name="d.jsonl"):
        path = folder / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return path

    write.dir = folder
    return write


def error_of(path, **kw) -> DataError:
    with pytest.raises(DataError) as info:
        dio.load_records(path, **kw)
    return info.value


# ------------------------------------------------------------------------------------- validation errors

def _drop(key):
    return lambda r: r.pop(key)


def _set(key, value):
    return lambda r: r.__setitem__(key, value)


BAD_PREFERENCE = {
    "missing column": (_drop("rejected"), "rejected", "missing required column"),
    "chosen not a list": (_set("chosen", "A red square."), "chosen", "expected a non-empty list of messages"),
    "message without role": (_set("chosen", [{"content": "x"}]), "chosen", "has no 'role'"),
    "message without content": (_set("prompt", [{"role": "user"}]), "prompt", "has no 'content'"),
    "chosen from the user": (_set("chosen", [{"role": "user", "content": "x"}]), "chosen", "role 'user'"),
    "text item without text": (_set("rejected", [{"role": "assistant", "content": [{"type": "text"}]}]),
                               "rejected", "without a 'text' string"),
    "empty completion": (_set("chosen", [{"role": "assistant", "content": "  \n "}]), "chosen", "empty completion"),
    "empty item completion": (_set("rejected", [{"role": "assistant", "content": [{"type": "text", "text": ""}]}]),
                              "rejected", "empty completion"),
    "span past the text": (_set("chosen_spans", [[2, 99]]), "chosen_spans", "not inside the chosen text"),
    "span reversed": (_set("chosen_spans", [[5, 2]]), "chosen_spans", "not inside"),
    "span not a pair": (_set("rejected_spans", [[1, 2, 3]]), "rejected_spans", "[start, end) pair"),
    "spans not a list": (_set("chosen_spans", "2-12"), "chosen_spans", "list of [start, end) pairs"),
    "score a string": (_set("chosen_score", "high"), "chosen_score", "expected a finite number"),
    "score a bool": (_set("rejected_score", True), "rejected_score", "expected a finite number"),
    "meta a number": (_set("meta", 5), "meta", "JSON text or a mapping"),
    "meta bad JSON": (_set("meta", "{seed: 1"), "meta", "not valid JSON"),
    "id not a string": (_set("id", 7), "id", "non-empty string id"),
    "images not a list": (_set("images", "a.png"), "images", "expected a list of images"),
    "missing image": (_set("images", ["nope.png"]), "images", "'nope.png' not found"),
    "path outside root": (_set("images", ["../outside.png"]), "images", "resolves outside its root"),
    "too few images": (_set("images", []), "prompt", "1 image placeholder"),
    "too many images": (_set("images", ["a.png", "b.png"]), "prompt", "holds 2 image(s)"),
    "image token count": (_set("prompt", [{"role": "user", "content": "<image> <image> Describe."}]),
                          "prompt", "2 image placeholder"),
    "corrupted images count": (_set("corrupted_images", ["a.png", "b.png"]), "corrupted_images", "holds 2"),
    "last prompt turn not user": (_set("prompt", [{"role": "user", "content": "<image>"},
                                                   {"role": "assistant", "content": "hi"}]), "prompt", "'user'"),
}


@pytest.mark.parametrize("case", list(BAD_PREFERENCE))
def test_bad_preference_row_names_file_row_and_field(ds, case):
    mutate, field, snippet = BAD_PREFERENCE[case]
    rows = [pref(1), pref(2), pref(3), pref(4)]
    mutate(rows[2])
    path = ds(rows)
    err = error_of(path)
    assert str(err).startswith(f"{path}, row 3, field '{field}': "), str(err)
    assert snippet in err.problem


def test_good_rows_pass_and_give_the_kind(ds):
    records = dio.load_records(ds([pref(1), pref(2, image="b.png")]))
    assert records.kind == "preference" and [r["id"] for r in records] == ["r1", "r2"]


def test_jsonl_row_numbers_are_line_numbers(ds):
    path = ds.dir / "gaps.jsonl"
    bad = pref(3)
    bad["chosen"] = []
    path.write_text(json.dumps(pref(1)) + "\n\n" + json.dumps(pref(2)) + "\n" + json.dumps(bad) + "\n")
    assert str(error_of(path)).startswith(f"{path}, row 4, field 'chosen'")


def test_duplicate_id_names_both_rows(ds):
    rows = [pref(1), pref(2), pref(3)]
    rows[2]["id"] = "r1"
    path = ds(rows)
    err = error_of(path)
    assert str(err).startswith(f"{path}, row 3, field 'id'") and "first at row 1" in str(err)


def test_unreadable_and_truncated_images(ds):
    (ds.dir / "text.png").write_text("not an image")
    full = noisy_png(ds.dir / "full.png").read_bytes()
    (ds.dir / "cut.png").write_bytes(full[: len(full) // 2])
    for name, word in (("text.png", "unreadable"), ("cut.png", "truncated")):
        rows = [pref(1), pref(2, image=name)]
        path = ds(rows, name=f"{word}.jsonl")
        err = error_of(path)
        assert str(err).startswith(f"{path}, row 2, field 'images': image 0: image '{name}' is {word}"), str(err)


def test_truncation_caught_even_when_pil_is_told_to_allow_it(tmp_path, monkeypatch):
    from PIL import Image, ImageFile

    full = noisy_png(tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(full[: len(full) - 20])  # pixel data complete, end chunk cut
    with Image.open(tmp_path / "full.png") as img:
        img.save(tmp_path / "full.jpg")
    jpeg = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # JPEG has no checksums: only a full decode sees it
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some libraries set it, globally
    for name in ("cut.png", "cut.jpg"):
        with pytest.raises(DataError, match=f"image '{name}' is truncated"):
            load_image(name, tmp_path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored for whoever set it
    assert load_image("full.png", tmp_path).size == load_image("full.jpg", tmp_path).size == (64, 64)


def test_paths_escaping_the_root_are_refused(tmp_path, make_image):
    root = tmp_path / "root"
    outside = make_image(tmp_path / "elsewhere" / "x.png")
    inside = make_image(root / "sub" / "in.png")
    (root / "link.png").symlink_to(outside)
    (root / "inlink.png").symlink_to(inside)
    for value in ("../elsewhere/x.png", str(outside), "link.png", "sub/../../elsewhere/x.png"):
        with pytest.raises(DataError, match="resolves outside its root"):
            resolve_image(value, base_dir=root)
    # Inside the root all of these are fine, absolute or through a symlink.
    assert resolve_image(str(inside), base_dir=root) == inside.resolve()
    assert resolve_image("inlink.png", base_dir=root) == inside.resolve()
    assert resolve_image("sub/./in.png", base_dir=root) == inside.resolve()


def test_image_root_replaces_the_dataset_folder(ds, make_image, tmp_path):
    root = tmp_path / "pictures"
    make_image(root / "only-here.png")
    path = ds([pref(1, image="only-here.png")])
    assert str(error_of(path)).startswith(f"{path}, row 1, field 'images'")
    assert len(dio.load_records(path, image_root=root)) == 1
    # Under an image root, the dataset folder's own files are outside it.
    with pytest.raises(DataError, match="resolves outside"):
        resolve_image(str(ds.dir / "a.png"), base_dir=ds.dir, image_root=root)


def test_image_values_bytes_mapping_and_video(tmp_path, make_image):
    make_image(tmp_path / "f.png")
    assert load_image(png_bytes("blue")).getpixel((0, 0)) == (0, 0, 255)
    assert load_image({"bytes": png_bytes(), "path": "ignored.png"}).size == (8, 8)
    assert load_image({"bytes": None, "path": "f.png"}, tmp_path).mode == "RGB"
    video = {
        "id": "v", "images": [["f.png", png_bytes()]],
        "messages": [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]},
                     {"role": "assistant", "content": "Nothing."}],
    }
    validate_record(video, "sft", "v.jsonl", 1, base_dir=tmp_path)
    video["images"] = [png_bytes()]  # one still image where the prompt wants a video
    with pytest.raises(DataError, match="1 video placeholder"):
        validate_record(video, "sft", "v.jsonl", 1, base_dir=tmp_path)
    with pytest.raises(DataError, match="no frames"):
        resolve_image([], tmp_path)


def test_sft_and_source_errors(ds):
    sft = [{"id": f"s{i}", "images": ["a.png"],
            "messages": [{"role": "user", "content": "<image>\nDescribe."}, {"role": "assistant", "content": "Red."}]}
           for i in range(3)]
    sft[1]["messages"][1]["content"] = " "
    path = ds(sft, "sft.jsonl")
    assert str(error_of(path)).startswith(f"{path}, row 2, field 'messages': empty completion")

    src = [{"id": f"c{i}", "images": ["a.png"], "caption": "A red square.",
            "objects": [{"name": "square", "color": "red", "bbox": [0, 0, 4, 4]}]} for i in range(3)]
    src[2]["objects"] = [{"color": "red"}]
    path = ds(src, "src.jsonl")
    assert str(error_of(path)).startswith(f"{path}, row 3, field 'objects'")
    src[2]["objects"] = [{"name": "square", "bbox": [4, 0, 0, 4]}]
    path = ds(src, "src2.jsonl")
    assert "bbox" in str(error_of(path))


def test_check_images_false_checks_shapes_only(ds):
    rows = [pref(1, image="missing.png")]
    validate_records(rows, "preference", "x.jsonl", base_dir=ds.dir, check_images=False)
    rows[0]["images"] = [5]
    with pytest.raises(DataError, match=r"x.jsonl, row 1, field 'images'"):
        validate_records(rows, "preference", "x.jsonl", base_dir=ds.dir, check_images=False)


# ------------------------------------------------------------------------------------------ reader errors


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(pref(1)) + "\n" + '{"id": "r2", "images": [\n')
    err = error_of(path)
    assert str(err).startswith(f"{path}, row 2: malformed JSON on line 2")
    path = tmp_path / "d.json"
    path.write_text('[\n  {"id": "r1"},\n  {"id": }\n]')
    err = error_of(path)
    assert str(err).startswith(f"{path}: malformed JSON on line 3")
    path.write_text('{"id": "r1"}')
    assert "expected a JSON list" in str(error_of(path))


def test_unknown_extension_and_missing_file(tmp_path):
    (tmp_path / "d.csv").write_text("id\n1\n")
    assert str(error_of(tmp_path / "d.csv")).startswith(f"{tmp_path / 'd.csv'}: unknown file type '.csv'")
    assert str(error_of(tmp_path / "nope.jsonl")) == f"{tmp_path / 'nope.jsonl'}: no such file or folder"
    (tmp_path / "empty").mkdir()
    assert "no data-*.parquet shards" in str(error_of(tmp_path / "empty"))


# ------------------------------------------------------------------------------------------- round trips


@pytest.fixture
def records(ds, make_image):
    make_image(ds.dir / "c.png", color="green")
    rows = [pref(1), pref(2, image="b.png"), pref(3, image="c.png"), pref(4), pref(5, image="b.png")]
    rows[1]["prompt"] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "<image>\nHi?"}]
    rows[3].pop("chosen_spans")
    rows[3]["meta"] = {"nested": [1, 2]}  # a mapping meta comes back a mapping
    rows[4]["corrupted_images"] = ["a.png"]
    rows[4]["chosen_score"] = 3
    return rows


def test_round_trip_jsonl_and_json(ds, records):
    assert dio.read_records(ds(records)) == records
    path = ds.dir / "d.json"
    path.write_text(json.dumps(records))
    assert dio.read_records(path) == records


def test_round_trip_shard_folder_and_single_parquet(ds, records, tmp_path):
    out = dio.write_records(tmp_path / "out", records, "preference", images="keep", image_root=ds.dir,
                            shard_size=2, method="test", settings={"k": 1})
    names = sorted(p.name for p in out.iterdir())
    assert names == ["data-00000-of-00003.parquet", "data-00001-of-00003.parquet",
                     "data-00002-of-00003.parquet", "dataset.json"]
    back = dio.read_records(out, image_root=ds.dir)
    stored = [stored_row(r) for r in records]
    assert back == stored
    # The one change: string content comes back as one text part, the form TRL's vision trainers use.
    assert back[1]["prompt"][0] == {"role": "system", "content": [{"type": "text", "text": "Be brief."}]}
    assert back[0]["chosen"] == [{"role": "assistant", "content": [{"type": "text", "text": "A red square on grey."}]}]
    assert back.origins[2] == (out / "data-00001-of-00003.parquet", 1)
    assert dio.read_records(out / "data-00001-of-00003.parquet") == stored[2:4]
    info = json.loads((out / "dataset.json").read_text())
    assert (info["kind"], info["method"], info["counts"]["rows"], info["settings"]) == ("preference", "test", 5, {"k": 1})
    # meta mixes JSON text and a mapping: the one column Arrow cannot type; messages and spans are native.
    assert info["storage"]["json_columns"] == ["meta"]


def test_copy_mode_copies_images_once(ds, records, tmp_path):
    out = dio.write_records(tmp_path / "out", dio.read_records(ds(records)), "preference")
    back = dio.load_records(out)
    on_disk = sorted(p.name for p in (out / "images").iterdir())
    referenced = sorted({Path(v).name for r in back for c in ("images", "corrupted_images") for v in r.get(c, [])})
    assert on_disk == referenced and len(on_disk) == 3  # a, b, c: an image shared by rows is stored once
    strip = [{k: v for k, v in stored_row(r).items() if k not in ("images", "corrupted_images")} for r in records]
    assert [{k: v for k, v in r.items() if k not in ("images", "corrupted_images")} for r in back] == strip
    for original, copied in zip(records, back, strict=True):
        assert copied["images"][0].startswith("images/")
        assert load_image(copied["images"][0], out).tobytes() == load_image(original["images"][0], ds.dir).tobytes()


def test_images_as_bytes_embed_and_copy(tmp_path):
    rows = [pref(1, image=png_bytes("red")), pref(2, image=png_bytes("blue"))]
    rows[1]["images"] = [{"bytes": png_bytes("blue"), "path": "blue.png"}]
    out = dio.write_records(tmp_path / "emb", rows, "preference", images="embed")
    assert not (out / "images").exists()
    assert dio.load_records(out) == [stored_row(r) for r in rows]
    out = dio.write_records(tmp_path / "cp", rows, "preference", images="copy")
    back = dio.load_records(out)
    assert all(r["images"][0].startswith("images/") and r["images"][0].endswith(".png") for r in back)


def test_video_round_trip(tmp_path):
    row = {"id": "v", "images": [[png_bytes("red"), png_bytes("blue")]],
           "messages": [{"role": "user", "content": [{"type": "video"}]}, {"role": "assistant", "content": "Red."}]}
    out = dio.write_records(tmp_path / "v", [row], "sft", images="embed")
    assert dio.load_records(out) == [stored_row(row)]


def test_round_trip_external_parquet_and_datasets_folder(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    # TRL style: list content everywhere, so Arrow can infer nested structs (which fill absent keys with null).
    rows = [pref(i, image=png_bytes()) for i in range(3)]
    for r in rows:
        r["chosen"] = [{"role": "assistant", "content": [{"type": "text", "text": "A red square on grey."}]}]
        r["chosen_spans"] = [[2, 5]]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "trl.parquet")
    assert dio.load_records(tmp_path / "trl.parquet") == rows

    saved = datasets.Dataset.from_list(copy.deepcopy(rows)).cast_column("images", datasets.List(datasets.Image()))
    saved.save_to_disk(str(tmp_path / "hf"))
    back = dio.load_records(tmp_path / "hf")
    assert [r["images"][0]["bytes"] for r in back] == [r["images"][0] for r in rows]
    assert [{k: v for k, v in r.items() if k != "images"} for r in back] == [
        {k: v for k, v in r.items() if k != "images"} for r in rows]


def test_errors_in_a_shard_folder_name_the_shard_and_its_row(ds, tmp_path):
    make = [pref(1), pref(2, image="b.png"), pref(3, image="a.png")]
    out = dio.write_records(tmp_path / "out", make, "preference", base_dir=ds.dir, shard_size=2)
    blue = dio.read_records(out)[1]["images"][0]
    (out / blue).unlink()
    err = error_of(out)
    assert str(err).startswith(f"{out / 'data-00000-of-00002.parquet'}, row 2, field 'images'")
    (out / "data-00001-of-00002.parquet").unlink()
    assert "data-00001-of-00002.parquet is missing" in str(error_of(out))


# ----------------------------------------------------------------------------------------------- writer


def _leftovers(parent: Path, name: str) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}") or p.name == name]


def test_failed_write_leaves_nothing(ds, tmp_path):
    rows = [pref(1), pref(2, image="missing.png")]
    with pytest.raises(DataError, match=r"row 2, field 'images'"):
        dio.write_records(tmp_path / "out", rows, "preference", base_dir=ds.dir)
    assert _leftovers(tmp_path, "out") == []


def test_failure_after_some_shards_leaves_nothing(ds, tmp_path, monkeypatch):
    real = dio.write_parquet
    calls = []

    def flaky(path, rows, plan):
        calls.append(path.name)
        if len(calls) == 2:
            raise OSError("disk full")
        real(path, rows, plan)

    monkeypatch.setattr(dio, "write_parquet", flaky)
    with pytest.raises(OSError, match="disk full"):
        dio.write_records(tmp_path / "out", [pref(1), pref(2)], "preference", base_dir=ds.dir, shard_size=1)
    assert calls == ["data-00000-of-00002.parquet", "data-00001-of-00002.parquet"]
    assert _leftovers(tmp_path, "out") == []


def test_failed_overwrite_keeps_the_old_output(ds, tmp_path):
    out = dio.write_records(tmp_path / "out", [pref(1)], "preference", base_dir=ds.dir)
    with pytest.raises(DataError):
        dio.write_records(out, [pref(1), pref(1)], "preference", base_dir=ds.dir)
    assert [r["id"] for r in dio.read_records(out)] == ["r1"]
    assert _leftovers(tmp_path, "out") == ["out"]


def test_keep_mode_refuses_paths_that_would_break(ds, tmp_path):
    with pytest.raises(DataError, match="images='keep'"):
        dio.write_records(tmp_path / "out", [pref(1)], "preference", base_dir=ds.dir, images="keep")
    assert _leftovers(tmp_path, "out") == []


# ---------------------------------------------------------------------------------------------- helpers


def test_text_helpers():
    chosen = [{"role": "assistant", "content": [{"type": "text", "text": "A red "}, {"type": "text", "text": "cube."}]}]
    assert completion_text(chosen) == "A red cube."
    prompt = [{"role": "user", "content": "<image><image> and"}, {"role": "user", "content": [{"type": "image"}]}]
    assert count_placeholders(prompt) == (3, 0)
    assert detect_kind(["id", "chosen", "rejected"]) == "preference"
    assert detect_kind(["id", "messages"]) == "sft"
    assert detect_kind(["id", "caption"]) == "source"
    assert detect_kind(["id", "caption"], declared="sft") == "sft"


def test_folder_with_one_jsonl_and_dataset_json(ds, tmp_path):
    folder = tmp_path / "sft"
    folder.mkdir()
    (folder / "a.png").write_bytes((ds.dir / "a.png").read_bytes())
    row = {"id": "s1", "images": ["a.png"], "messages": [{"role": "user", "content": "<image>Hi"},
                                                         {"role": "assistant", "content": "Red."}]}
    dio.write_jsonl(folder / "train.jsonl", [row, dict(row, id="s2")])
    dio.write_dataset_json(folder, "sft", {"rows": 2})
    records = dio.load_records(folder)
    assert records.kind == "sft" and [r["id"] for r in records] == ["s1", "s2"]
    assert records.origins[1] == (folder / "train.jsonl", 2)
    (folder / "dataset.json").write_text('{"schema_version": 99, "kind": "sft"}')
    assert "newer than this align reads" in str(error_of(folder))


def test_dataset_json_kind_must_match_request(ds, tmp_path):
    out = dio.write_records(tmp_path / "out", [pref(1)], "preference", base_dir=ds.dir)
    with pytest.raises(DataError, match="is a preference dataset; expected sft"):
        dio.load_records(out, kind="sft")


# -------------------------------------------------------------------------------------------------- CLI


def test_cli_show_good_dataset(run_cli, ds, records, tmp_path):
    out = dio.write_records(tmp_path / "out", dio.read_records(ds(records)), "preference", method="test")
    result = run_cli("data", "show", out, "--rows", "2")
    assert result.code == 0, result
    assert "preference" in result.out
    for label, value in (("rows", "5"), ("images", "5"), ("distinct ids", "5"), ("rows with spans", "4")):
        # a table line "│ rows │ 5 │", whatever box characters the console picked
        assert any(re.fullmatch(rf"\W*{label}\W+{value}\W*", line) for line in result.out.splitlines()), (label, result)
    assert "row 1 of data-00000-of-00001.parquet" in result.out and "row 3 of" not in result.out
    assert "(32x32)" in result.out  # images shown with their size


def test_cli_show_bad_dataset(run_cli, ds):
    rows = [pref(1), pref(2)]
    rows[1]["rejected"] = [{"role": "assistant", "content": " "}]
    path = ds(rows)
    result = run_cli("data", "show", path)
    assert result.code == 2, result
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}, row 2, field 'rejected'"), result.err
    assert "Traceback" not in result.err + result.out


def test_data_show_on_benchmark_questions_says_where_they_go(tmp_path, run_cli):
    path = tmp_path / "pope.jsonl"
    path.write_text(json.dumps({"question_id": 1, "image": "a.png", "text": "Is there a cat?", "label": "no"}) + "\n")
    result = run_cli("data", "show", path)
    assert result.code == 2 and "holds benchmark questions" in result.err and "align eval" in result.err
