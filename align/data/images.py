"""Image values in records, and how they become pixels.

An image value is one of:
- a path string, relative to the dataset file's folder (or to `image_root` when given); an absolute path is
  accepted only when it lies inside that root, so a dataset can never make us read files outside it;
- raw bytes of an encoded image (PNG, JPEG, ...);
- `{"bytes": ..., "path": ...}`, the storage of the `datasets` Image feature (bytes win when both are set);
- a list of the above: a video, one value per frame.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from align.errors import DataError

IMAGE_VALUE_HELP = "an image is a path string, bytes or {'bytes': ..., 'path': ...}; a video is a list of them"


def is_video(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def _describe(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, Mapping):
        return f"<image {value.get('path')!r}>" if value.get("path") else "<image bytes>"
    return repr(value) if not isinstance(value, str) else value


def _fail(value: Any, problem: str, path: object, row: int | None, field: str | None) -> DataError:
    """Where to report: the dataset location when the caller knows it, else the image itself."""
    return DataError(path if path is not None else _describe(value), problem, row=row, field=field)


def resolve_image(
    value: Any,
    base_dir: str | Path | None = None,
    image_root: str | Path | None = None,
    *,
    path: object = None,
    row: int | None = None,
    field: str | None = None,
) -> Path | bytes | list:
    """The file (real absolute Path) or bytes behind an image value; a list of them for a video.

    Paths resolve under `image_root` when given, else under `base_dir` (the dataset's folder). A path that ends
    up outside that root -- through `..`, an absolute path elsewhere or a symlink -- is refused, as is a missing
    file. `path`/`row`/`field` only say where to report a problem.
    """
    where = (path, row, field)
    if is_video(value):
        if not value:
            raise _fail(value, "a video (list of frames) has no frames", *where)
        if any(is_video(frame) for frame in value):
            raise _fail(value, "a video frame is itself a list; " + IMAGE_VALUE_HELP, *where)
        return [resolve_image(frame, base_dir, image_root, path=path, row=row, field=field) for frame in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        if not value:
            raise _fail(value, "image bytes are empty", *where)
        return bytes(value)
    if isinstance(value, Mapping):
        if value.get("bytes") is not None:
            return resolve_image(value["bytes"], base_dir, image_root, path=path, row=row, field=field)
        if value.get("path") is None:
            raise _fail(value, "image mapping has neither 'bytes' nor 'path'", *where)
        value = value["path"]
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise _fail(value, f"not an image value ({type(value).__name__}); " + IMAGE_VALUE_HELP, *where)

    root = image_root if image_root is not None else base_dir
    if root is None:
        raise _fail(value, f"image path '{value}' has no folder to resolve under; pass an image root", *where)
    # realpath on both sides: `..` and symlinks are judged by where they really lead.
    real_root = Path(os.path.realpath(root))
    candidate = Path(value) if os.path.isabs(value) else Path(root) / value
    real = Path(os.path.realpath(candidate))
    if not real.is_relative_to(real_root):
        raise _fail(
            value,
            f"image path '{value}' resolves outside its root '{root}'; move the image under the root "
            "or pass --image-root",
            *where,
        )
    if not real.is_file():
        raise _fail(value, f"image '{value}' not found under '{root}'", *where)
    return real


@contextlib.contextmanager
def _strict_truncation():
    """PIL decodes truncated files silently when LOAD_TRUNCATED_IMAGES is set (some libraries set it globally)."""
    from PIL import ImageFile

    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old


def decode_image(source: Path | bytes, *, label: str, path: object = None, row=None, field=None):
    """Fully decode a file or bytes into an RGB PIL image; a truncated or unreadable image is a DataError.

    PIL opens lazily and reads pixels only on demand, so truncation would surface much later (in a data loader
    worker): verify() walks the whole file (catching a PNG cut after its pixel data) and load() decodes it.
    """
    from PIL import Image, UnidentifiedImageError

    def open_it():
        return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)

    try:
        with _strict_truncation():
            with open_it() as probe:
                probe.verify()
            with open_it() as img:
                img.load()
                return img.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise _fail(label, f"image {label} is too large to decode safely: {exc}", path, row, field) from None
    except UnidentifiedImageError:
        raise _fail(label, f"image {label} is unreadable: not an image format PIL knows", path, row, field) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        text = str(exc)
        # PIL says "image file is truncated", "Truncated File Read", "truncated PNG file", ...
        kind = "truncated" if "truncated" in text.lower() else "unreadable"
        raise _fail(label, f"image {label} is {kind}: {text}", path, row, field) from None


def _label(value: Any) -> str:
    if isinstance(value, Mapping) and value.get("bytes") is None:
        value = value.get("path")
    return f"'{value}'" if isinstance(value, str) else _describe(value)


def load_image(
    value: Any,
    base_dir: str | Path | None = None,
    image_root: str | Path | None = None,
    *,
    path: object = None,
    row: int | None = None,
    field: str | None = None,
):
    """One image value -> a fully decoded RGB PIL image (see `resolve_image` for the rules)."""
    if is_video(value):
        raise _fail(value, "expected one image, got a video (list of frames); use load_frames", path, row, field)
    source = resolve_image(value, base_dir, image_root, path=path, row=row, field=field)
    return decode_image(source, label=_label(value), path=path, row=row, field=field)


def load_frames(value: Any, base_dir=None, image_root=None, *, path=None, row=None, field=None) -> list:
    """A video value (list of frames) -> list of RGB PIL images; a single image gives a one-frame list."""
    frames = value if is_video(value) else [value]
    if not frames:
        raise _fail(value, "a video (list of frames) has no frames", path, row, field)
    return [load_image(f, base_dir, image_root, path=path, row=row, field=field) for f in frames]


def load_media(value: Any, base_dir=None, image_root=None, **where):
    """An image value -> PIL image; a video value -> list of PIL images."""
    if is_video(value):
        return load_frames(value, base_dir, image_root, **where)
    return load_image(value, base_dir, image_root, **where)


def image_bytes(value: Any, base_dir=None, image_root=None, **where) -> tuple[bytes, str | None]:
    """(encoded bytes, file suffix or None) of one image value, for copying or embedding it elsewhere."""
    source = resolve_image(value, base_dir, image_root, **where)
    if isinstance(source, list):
        raise _fail(value, "expected one image, got a video", where.get("path"), where.get("row"), where.get("field"))
    if isinstance(source, bytes):
        return source, None
    return source.read_bytes(), source.suffix.lower() or None


def describe_image(value: Any, base_dir=None, image_root=None) -> str:
    """'images/cat.png (640x480)' or '<1234 bytes> (32x32)'; a video as 'video: 8 frames, first ...'."""
    if is_video(value):
        return f"video: {len(value)} frames, first {describe_image(value[0], base_dir, image_root)}"
    try:
        size = load_image(value, base_dir, image_root).size
        return f"{_label(value).strip(chr(39))} ({size[0]}x{size[1]})"
    except DataError as exc:
        return f"{_label(value).strip(chr(39))} ({exc.problem})"
