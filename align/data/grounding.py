"""Grounding markup in message text, rendered into each model family's box convention.

Records carry boxes in one format-neutral markup, in PIXELS of the example's first image:

    <ref>the red circle</ref><bbox>24,1,42,19</bbox>

`<ref>...</ref>` marks a referred phrase; `<bbox>x0,y0,x1,y1</bbox>` a box with x1/y1 exclusive (PIL's and the
shapes world's convention), so 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height. Boxes written next to each
other with nothing between them form one group (several boxes of one phrase). `render_grounding` rewrites the
markup for one family:

| format      | phrase               | box (96x96 image, bbox 24,1,42,19)   | several boxes            |
|-------------|----------------------|--------------------------------------|--------------------------|
| `shikra`    | plain, box glued on  | `[0.250,0.010,0.438,0.198]`          | `[b1;b2]`                |
| `qwen`      | `<ref>phrase</ref>`  | `<box>(250,10),(437,197)</box>`      | `<box>..</box><box>..</box>` |
| `minigptv2` | `<p>phrase</p>` + " "| `{<25><1><43><19>}`                  | `{..}<delim>{..}`        |
| `ferret`    | plain + " "          | `[250, 10, 437, 197]`                | `[..], [..]`             |
| `none`      | plain                | dropped, with the spaces before it   | dropped                  |

Numbers, each from the family's own data code (quoted from their public repositories):
- Shikra (shikras/shikra, `norm_box_xyxy` + `PlainBoxFormatter`): `round(x / w, 3)` on Python floats, written
  with `:.3f`. Python's round is round-half-even on the float's exact value, so 42/96 = 0.4375 -> 0.438 but
  6/96 = 0.0625 -> 0.062. Several boxes are joined by ';' inside one bracket pair.
- Qwen-VL: the paper normalises to [0, 1000); the data-making code is not public. Its tokenizer draws a box at
  pixel `int(c / 1000 * w)`, the inverse of flooring, so we write `floor(x * 1000 / w)` clipped to 999 (an
  exclusive right edge at the border, 1000, becomes 999). Note: Qwen-VL's own RefCOCO evaluation decodes with
  `c / 999 * w` and ms-swift writes `round(x / w * 1000)` unclipped; the differences are under one unit.
- MiniGPT-v2 (Vision-CAIR/MiniGPT-4, RefCOCO/VG/Flickr datasets): `int(x / w * 100)`, not clipped, so 0..100;
  phrases as `<p>phrase</p> {<x0><y0><x1><y1>}` (PhraseToObjectDataset), several boxes joined by `<delim>`.
- Ferret (apple/ml-ferret train.py): `regulate_box` clips pixels to [0, w - 1] first, then
  `int(x * 1000 / w)`, so 0..999 and a box at the right border ends at floor((w - 1) * 1000 / w). Output
  grounding is "a dog [100, 200, 300, 400]": the phrase, a space, the box. Several boxes joined by ", " is our
  choice (not verified against Ferret data).

We floor in exact rational arithmetic (`fractions.Fraction`), not floats: MiniGPT-v2's float `int(29 / 100 *
100)` is 28 because 0.29 * 100 = 28.999999999999996; exact flooring gives 29. Shikra keeps the float rounding,
where the family's own numbers are floats.

Square padding (LLaVA/Shikra `expand2square`) shifts boxes; pass the size of the image the model is shown.

MiniGPT-v2 also prefixes each instruction with a task identifier: `add_task_identifier`.
`grounding_records` makes grounding SFT data (with the markup) from shapes-world sources.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from align.data import shapes_vocab as vocab
from align.data.messages import IMAGE_TOKEN
from align.data.nouns import article
from align.data.shapes import world_seed
from align.errors import ConfigError, DataError, lookup

Box = tuple[Fraction, Fraction, Fraction, Fraction]
Size = tuple[int, int]

_TAG = re.compile(r"<ref>|</ref>|<bbox>|</bbox>")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_DEFAULT_WHERE = "grounding markup"


# ------------------------------------------------------------------------------------------------ parsing


def _fail(problem: str, where: Mapping[str, Any]) -> DataError:
    return DataError(where.get("path") or _DEFAULT_WHERE, problem, row=where.get("row"), field=where.get("field"))


def _parse_box(body: str, size: Size | None, where: Mapping[str, Any]) -> Box:
    markup = f"<bbox>{body}</bbox>"
    parts = [p.strip() for p in body.split(",")]
    if len(parts) != 4:
        raise _fail(f"{markup} needs 4 numbers x0,y0,x1,y1, got {len(parts)}", where)
    for part in parts:
        if not _NUMBER.fullmatch(part):
            raise _fail(f"{markup}: {part!r} is not a non-negative number", where)
    x0, y0, x1, y1 = (Fraction(p) for p in parts)
    if not (x0 < x1 and y0 < y1):
        raise _fail(f"{markup} needs x0 < x1 and y0 < y1 (x1, y1 exclusive)", where)
    if size is None:
        raise _fail(f"{markup} needs the size of the example's first image, and there is none", where)
    if x1 > size[0] or y1 > size[1]:
        raise _fail(f"{markup} lies outside the {size[0]}x{size[1]} image (x1 <= width, y1 <= height)", where)
    return x0, y0, x1, y1


def parse_grounding(text: str, image_size: Size | None = None, **where: Any) -> list[tuple[str, Any]]:
    """Text -> segments ("text", str), ("ref", phrase), ("boxes", [Box, ...]); malformed markup is a DataError.

    `where` (path, row, field) only says where to report a problem.
    """
    segments: list[tuple[str, Any]] = []
    pos, open_ref = 0, None  # open_ref: where the phrase of an open <ref> starts
    for match in _TAG.finditer(text):
        tag, start = match.group(), match.start()
        if start < pos:  # inside a <bbox> body already consumed
            continue
        if tag == "<ref>":
            if open_ref is not None:
                raise _fail("a <ref> inside another <ref>; close the first with </ref>", where)
            _add_text(segments, text[pos:start])
            open_ref = match.end()
        elif tag == "</ref>":
            if open_ref is None:
                raise _fail("</ref> without an opening <ref>", where)
            phrase = text[open_ref:start]
            if not phrase.strip():
                raise _fail("an empty <ref></ref>: the referred phrase is missing", where)
            segments.append(("ref", phrase))
            open_ref = None
        elif tag == "</bbox>":
            raise _fail("</bbox> without an opening <bbox>", where)
        else:
            if open_ref is not None:
                raise _fail("a <bbox> inside <ref>...</ref>; put the box after </ref>", where)
            end = text.find("</bbox>", match.end())
            body = text[match.end():end]
            if end < 0 or _TAG.search(body):
                raise _fail(f"<bbox> at character {start} is not closed by </bbox>", where)
            _add_text(segments, text[pos:start])
            box = _parse_box(body, image_size, where)
            if segments and segments[-1][0] == "boxes":
                segments[-1][1].append(box)  # adjacent boxes: one group
            else:
                segments.append(("boxes", [box]))
            pos = end + len("</bbox>")
            continue
        pos = match.end()
    if open_ref is not None:
        raise _fail("<ref> is never closed by </ref>", where)
    _add_text(segments, text[pos:])
    return segments


def _add_text(segments: list, text: str) -> None:
    if text:
        segments.append(("text", text))


# ------------------------------------------------------------------------------------------------ formats


def _shikra_box(box: Box, size: Size) -> str:
    # Shikra's norm_box_xyxy: float division, round(., 3), then PlainBoxFormatter's f"{:.3f}".
    w, h = size
    coords = (float(box[0]) / w, float(box[1]) / h, float(box[2]) / w, float(box[3]) / h)
    return ",".join(f"{round(min(max(c, 0.0), 1.0), 3):.3f}" for c in coords)


def _qwen_coords(box: Box, size: Size) -> list[int]:
    w, h = size
    return [min(math.floor(c * 1000 / d), 999) for c, d in zip(box, (w, h, w, h), strict=True)]


def _minigpt_coords(box: Box, size: Size) -> list[int]:
    w, h = size
    return [math.floor(c * 100 / d) for c, d in zip(box, (w, h, w, h), strict=True)]


def _ferret_coords(box: Box, size: Size) -> list[int]:
    # Ferret's regulate_box clips pixels to [0, side - 1] before scaling by 1000 / side.
    w, h = size
    return [math.floor(min(c, d - 1) * 1000 / d) for c, d in zip(box, (w, h, w, h), strict=True)]


def _shikra_boxes(boxes: list[Box], size: Size) -> str:
    return "[" + ";".join(_shikra_box(b, size) for b in boxes) + "]"


def _qwen_boxes(boxes: list[Box], size: Size) -> str:
    return "".join("<box>({},{}),({},{})</box>".format(*_qwen_coords(b, size)) for b in boxes)


def _minigpt_boxes(boxes: list[Box], size: Size) -> str:
    return "<delim>".join("{{<{}><{}><{}><{}>}}".format(*_minigpt_coords(b, size)) for b in boxes)


def _ferret_boxes(boxes: list[Box], size: Size) -> str:
    return ", ".join("[{}, {}, {}, {}]".format(*_ferret_coords(b, size)) for b in boxes)


def _plain(phrase: str) -> str:
    return phrase


# Readers: every box a model wrote in a family's convention, back in pixels of the image (floats). Each is the
# inverse of the writer above up to its rounding (one unit of the family's scale).
_DECIMAL = r"(\d+(?:\.\d+)?)"
_SHIKRA_BOX = re.compile(r",\s*".join([_DECIMAL] * 4))  # inside [...], several joined by ';'
_SHIKRA_GROUP = re.compile(r"\[([^\[\]]*)\]")
_QWEN_BOX = re.compile(r"<box>\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*,\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*</box>")
_MINIGPT_BOX = re.compile(r"\{\s*<(\d+)>\s*<(\d+)>\s*<(\d+)>\s*<(\d+)>\s*\}")
_FERRET_BOX = re.compile(r"\[\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\]")


def _scaled(match, size: Size, scale: float) -> tuple[float, float, float, float]:
    w, h = size
    x0, y0, x1, y1 = (float(v) for v in match)
    return x0 * w / scale, y0 * h / scale, x1 * w / scale, y1 * h / scale


def _read_shikra(text: str, size: Size) -> list:
    return [_scaled(m.groups(), size, 1.0) for group in _SHIKRA_GROUP.finditer(text)
            for m in _SHIKRA_BOX.finditer(group.group(1))]


def _reader(pattern: re.Pattern, scale: float) -> Callable[[str, Size], list]:
    return lambda text, size: [_scaled(m.groups(), size, scale) for m in pattern.finditer(text)]


@dataclass(frozen=True)
class GroundingFormat:
    """How one family writes a referred phrase and a group of adjacent boxes."""

    ref: Callable[[str], str]
    boxes: Callable[[list[Box], Size], str] | None  # None: the family has no grounding; boxes are dropped
    ref_box_sep: str = ""  # written between a phrase and the box right after it
    help: str = ""
    # Every box in a model's text -> [(x0, y0, x1, y1)] in pixels of an image of `size` (None: no grounding).
    read: Callable[[str, Size], list] | None = None

    def __call__(self, text: str, image_size: Size | None, **where: Any) -> str:
        """Render the markup in `text` for an image of `image_size` (w, h); see `render_grounding`."""
        size = _check_size(image_size)
        if "<" not in text:
            return text
        return self.render(parse_grounding(text, size, **where), size)

    def render(self, segments: list[tuple[str, Any]], size: Size | None) -> str:
        out: list[str] = []
        previous = None
        for kind, value in segments:
            if kind == "text":
                out.append(value.lstrip(" \t") if previous == "dropped" and _at_line_start(out) else value)
            elif kind == "ref":
                out.append(self.ref(value))
            elif self.boxes is None:
                _drop_trailing_spaces(out)
                kind = "dropped"
            else:
                out.append((self.ref_box_sep if previous == "ref" else "") + self.boxes(value, size))
            previous = kind
        return "".join(out)


def _drop_trailing_spaces(out: list[str]) -> None:
    # "a circle <bbox>..</bbox> and" reads "a circle and" without its box, not "a circle  and".
    while out and not out[-1].rstrip(" \t"):
        out.pop()
    if out:
        out[-1] = out[-1].rstrip(" \t")


def _at_line_start(out: list[str]) -> bool:
    return not out or out[-1].endswith("\n")


GROUNDING_FORMATS: dict[str, GroundingFormat] = {
    "shikra": GroundingFormat(_plain, _shikra_boxes, help="[x0,y0,x1,y1] in [0,1], 3 decimals, after the phrase",
                              read=_read_shikra),
    "qwen": GroundingFormat(lambda p: f"<ref>{p}</ref>", _qwen_boxes,
                            help="<ref>phrase</ref><box>(x0,y0),(x1,y1)</box>, integers in [0,1000)",
                            read=_reader(_QWEN_BOX, 1000)),
    "minigptv2": GroundingFormat(lambda p: f"<p>{p}</p>", _minigpt_boxes, " ",
                                 help="<p>phrase</p> {<x0><y0><x1><y1>}, integers 0..100",
                                 read=_reader(_MINIGPT_BOX, 100)),
    "ferret": GroundingFormat(_plain, _ferret_boxes, " ", help="phrase [x0, y0, x1, y1], integers 0..999",
                              read=_reader(_FERRET_BOX, 1000)),
    "none": GroundingFormat(_plain, None, help="phrases as plain text, boxes dropped (no grounding)"),
}


def read_boxes(text: str, fmt: str, image_size: Size) -> list[tuple[float, float, float, float]]:
    """Every box `text` writes in grounding format `fmt`, as (x0, y0, x1, y1) in pixels of an image of
    `image_size` (w, h), in the order written; [] when it writes none. A format without boxes is a ConfigError."""
    grounding = lookup(GROUNDING_FORMATS, "grounding format", fmt)
    if grounding.read is None:
        raise ConfigError(f"grounding format '{fmt}' writes no boxes; use one of "
                          f"{', '.join(k for k, v in GROUNDING_FORMATS.items() if v.read)}")
    return grounding.read(text, _check_size(image_size))


def _check_size(image_size: Any) -> Size | None:
    if image_size is None:
        return None
    if (not isinstance(image_size, (tuple, list)) or len(image_size) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in image_size)):
        raise ValueError(f"image_size must be (width, height) in positive integer pixels, got {image_size!r}")
    return int(image_size[0]), int(image_size[1])


def render_grounding(text: str, image_size: Size | None, fmt: str, **where: Any) -> str:
    """Rewrite `<ref>`/`<bbox>` markup in `text` into format `fmt` for an image of `image_size` = (w, h).

    Text without markup comes back unchanged. An unknown `fmt` lists the known ones; malformed markup is a
    DataError located by `where` (path, row, field).
    """
    return lookup(GROUNDING_FORMATS, "grounding format", fmt)(text, image_size, **where)


def _render_content(content: Any, size: Size | None, fmt: str, where: dict) -> Any:
    if isinstance(content, str):
        return render_grounding(content, size, fmt, **where)
    return [
        {**item, "text": render_grounding(item["text"], size, fmt, **where)}
        if isinstance(item, Mapping) and item.get("type") == "text" and isinstance(item.get("text"), str)
        else item
        for item in content or []
    ]


def render_record(
    record: Mapping[str, Any],
    fmt: str,
    image_sizes: Sequence[Size],
    *,
    fields: Iterable[str] = ("messages",),
    path: object = None,
    row: int | None = None,
) -> dict[str, Any]:
    """A copy of an SFT record with the markup in every text item of `fields` rendered into `fmt`.

    Boxes are in pixels of the first image, so only `image_sizes[0]` (w, h) is used; the caller loaded the
    images. `path`/`row` locate errors.
    """
    size = image_sizes[0] if image_sizes else None
    out = dict(record)
    for field in fields:
        if record.get(field) is None:
            continue
        where = {"path": path or f"record {record.get('id')!r}", "row": row, "field": field}
        out[field] = [
            {**message, "content": _render_content(message.get("content"), size, fmt, where)}
            for message in record[field]
        ]
    return out


# --------------------------------------------------------------------------------- MiniGPT-v2 task identifiers

# MiniGPT-v2 prefixes every instruction with the identifier of its task (paper, Table 1; Vision-CAIR/MiniGPT-4
# dataset instruction pools, e.g. "[refer] give me the location of {}").
TASK_IDENTIFIERS: dict[str, str] = {
    "grounding": "[grounding] ",
    "refer": "[refer] ",
    "vqa": "[vqa] ",
    "caption": "[caption] ",
    "detection": "[detection] ",
    "identify": "[identify] ",
}

# Image tokens and whitespace at the start of a user text: the identifier goes after them, as MiniGPT-v2 writes
# "<Img><ImageHere></Img> [refer] ...".
_LEADING_IMAGES = re.compile(r"(?:\s*" + re.escape(IMAGE_TOKEN) + r")*\s*")


def _prefixed(text: str, prefix: str) -> str:
    at = _LEADING_IMAGES.match(text).end()
    return text[:at] + prefix + text[at:]


def _prefix_turn(content: Any, prefix: str) -> Any:
    if isinstance(content, str):
        return _prefixed(content, prefix)
    items = list(content or [])
    for i, item in enumerate(items):
        if isinstance(item, Mapping) and item.get("type") == "text":
            items[i] = {**item, "text": _prefixed(item.get("text") or "", prefix)}
            return items
    return items + [{"type": "text", "text": prefix.rstrip()}]  # an image-only turn still names its task


def add_task_identifier(record: Mapping[str, Any], task: str) -> dict[str, Any]:
    """A copy of an SFT record with MiniGPT-v2's `[task] ` prefixed to the text of every user turn.

    Each call adds a prefix, so call it once per record. An unknown task lists the known ones.
    """
    prefix = lookup(TASK_IDENTIFIERS, "MiniGPT-v2 task identifier", task)
    messages = [
        {**m, "content": _prefix_turn(m.get("content"), prefix)} if m.get("role") == "user" else m
        for m in record["messages"]
    ]
    return {**record, "messages": messages}


# ------------------------------------------------------------------------------ shapes-world grounding SFT data

# The three grounding tasks, named by their MiniGPT-v2 identifiers so `meta.task` feeds add_task_identifier.
GROUNDING_TASKS: tuple[str, ...] = ("grounding", "refer", "identify")
GROUNDED_CAPTION_PROMPT = "Describe the image and give the box of each shape."
REFER_PROMPT = "Where is the {color} {name}? Give its bounding box."
REGION_PROMPT = "What is in the region {box}?"


def bbox_markup(bbox: Sequence[float]) -> str:
    """`<bbox>x0,y0,x1,y1</bbox>` for a pixel box; integral floats are written as integers."""
    return "<bbox>" + ",".join(str(int(c)) if float(c).is_integer() else str(c) for c in bbox) + "</bbox>"


def _phrase(obj: Mapping[str, Any]) -> str:
    words = [w for w in (obj.get("size") if isinstance(obj.get("size"), str) else None, obj["color"], obj["name"])
             if w]
    return f"{article(words[0])} {' '.join(words)}"


def _grounded_caption(objects: list[Mapping[str, Any]]) -> str:
    parts = [f"<ref>{_phrase(o)}</ref>{bbox_markup(o['bbox'])}" for o in objects]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    noun = "shape" if len(objects) == 1 else "shapes"
    count = vocab.NUMBER_WORDS.get(len(objects), str(len(objects)))
    return f"The image shows {count} {noun}: {listed}."


def unambiguous_objects(objects: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The objects that are the only one of their colour and class in the image: "the red circle" names one."""
    objects = list(objects)
    counts = Counter((o.get("color"), o.get("name")) for o in objects)
    return [o for o in objects if counts[(o.get("color"), o.get("name"))] == 1]


def _task_record(task: str, obj: Mapping[str, Any] | None, objects: list, source: Mapping, k: int) -> dict:
    if task == "grounding":
        prompt, answer = GROUNDED_CAPTION_PROMPT, _grounded_caption(objects)
    elif task == "refer":
        prompt = REFER_PROMPT.format(color=obj["color"], name=obj["name"])
        answer = f"<ref>the {obj['color']} {obj['name']}</ref>{bbox_markup(obj['bbox'])}"
    else:
        prompt, answer = REGION_PROMPT.format(box=bbox_markup(obj["bbox"])), _phrase(obj)
    # meta.object: the shape's index in the source's `objects`, for checking an answer against ground truth.
    index = next((j for j, o in enumerate(source["objects"]) if o is obj), None)
    meta = {"task": task, **({"object": index} if obj is not None else {})}
    return {
        "id": f"{source['id']}_ground{k}",
        "images": [source["images"][0]],
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ],
        "method": "grounding",
        "meta": json.dumps(meta, sort_keys=True),
    }


def _candidates(objects: list, rng: random.Random) -> dict[str, list]:
    """task -> the objects it may ask about, shuffled; the grounded caption covers all objects at once."""
    refer = unambiguous_objects(objects)
    identify = list(objects)
    rng.shuffle(refer)
    rng.shuffle(identify)
    return {"grounding": [None], "refer": refer, "identify": identify}


def _pick(candidates: dict[str, list], n: int, offset: int) -> list[tuple[str, Any]]:
    """Up to n (task, object) pairs, tasks taken in turn from `offset` so the mix stays balanced over images."""
    order = [GROUNDING_TASKS[(offset + j) % len(GROUNDING_TASKS)] for j in range(len(GROUNDING_TASKS))]
    queues = {task: list(candidates[task]) for task in order}
    picked: list[tuple[str, Any]] = []
    while len(picked) < n and any(queues.values()):
        for task in order:
            if queues[task] and len(picked) < n:
                picked.append((task, queues[task].pop(0)))
    return picked


def _usable_objects(source: Mapping[str, Any], where: dict) -> list[Mapping[str, Any]]:
    try:
        size = _check_size(source.get("size"))
    except ValueError:
        size = None
    if size is None:
        raise DataError(where["path"], "needs 'size' [width, height] of its image in pixels for the boxes",
                        row=where["row"], field="size")
    if not source.get("images"):
        raise DataError(where["path"], "needs an image to ground boxes in", row=where["row"], field="images")
    objects = [o for o in source.get("objects") or [] if o.get("bbox") is not None and o.get("color")]
    for obj in objects:  # the markup must parse for this image, or every renderer would fail later
        parse_grounding(bbox_markup(obj["bbox"]), size, **where, field="objects")
    return objects


def grounding_records(sources: Iterable[Mapping[str, Any]], n_per_image: int = 2, seed: int = 0) -> list[dict]:
    """Grounding SFT records (with `<ref>`/`<bbox>` markup) from shapes-world sources.

    Three tasks, named by MiniGPT-v2 identifiers in `meta.task`: "grounding" (grounded captioning: every shape
    with its box), "refer" (referring expression -> box) and "identify" (region -> phrase). "refer" only asks
    about a shape that is the only one of its colour and class in the image, so "the red circle" names one
    shape; "identify" may ask about any shape, since its box already picks it. Shapes without a bbox or colour
    are left out. Up to `n_per_image` distinct records per image (fewer when the image offers fewer), the
    tasks taken in turn; every source needs its image `size`. The same sources and seed give the same records.
    """
    if n_per_image < 1:
        raise ValueError(f"n_per_image must be at least 1, got {n_per_image}")
    path = getattr(sources, "path", None) or "sources"
    origins = getattr(sources, "origins", None)
    records = []
    for i, source in enumerate(sources):
        file, row = origins[i] if origins else (path, i + 1)
        objects = _usable_objects(source, {"path": file, "row": row})
        if not objects:
            continue
        rng = random.Random(world_seed(seed, "grounding", source["id"]))
        for k, (task, obj) in enumerate(_pick(_candidates(objects, rng), n_per_image, offset=i)):
            records.append(_task_record(task, obj, objects, source, k))
    return records
