"""ComfyUI's file routes: ``/view``, ``/upload/image`` and ``/upload/mask`` (the model
listings are in :mod:`.models`, the start-up lists in :mod:`.catalogue`).

Every file a request names is resolved (links followed) and must stay inside its base
folder (output, input or temp)."""

from __future__ import annotations

import hashlib
import io
import json
import mimetypes
import os
import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute

from midrun.server.auth import current_user
from midrun.server.errors import HTTPError
from midrun.server.requests import jobs_of
from midrun.server.routing import both, server_of
from midrun.server.userdata import atomic_write

PACKAGE_DIR = Path(__file__).resolve().parent.parent
WEB_DIR = Path(__file__).resolve().parent / "web"
EXAMPLES_DIR = PACKAGE_DIR / "examples"
TEMPLATE_MODULE = "midrun"
TEMPLATE_NAME = re.compile(r"^[a-zA-Z0-9_.-]+$")
FILE_TYPES = ("output", "input", "temp")
MAX_PIXELS = 64 * 1024 * 1024  # 8192x8192: an image decoded for a preview, a channel or a mask
#: Types a browser could run or render as a page: sent as downloads, never inline.
UNSAFE_TYPES = ("text/html", "application/xhtml+xml", "text/javascript", "application/javascript",
                "application/ecmascript", "text/css", "image/svg+xml", "text/xml",
                "application/xml")  # fmt: skip
ANNOTATION = re.compile(r"^(?P<name>.*) \[(?P<type>output|input|temp)\]$")

_upload_lock = threading.Lock()


def base_dir(request: Request, file_type: str) -> Path:
    config = server_of(request).config
    folders = {"output": config.output_dir, "input": config.upload_dir, "temp": config.temp_dir}
    if file_type not in folders:
        raise HTTPError(
            400, "invalid_type", f"type must be one of {', '.join(FILE_TYPES)}, not {file_type!r}"
        )
    folder = Path(folders[file_type])
    folder.mkdir(parents=True, exist_ok=True)
    return folder.resolve()


def _unsafe_part(value: str) -> bool:
    parts = value.replace("\\", "/").split("/")
    return "\0" in value or value.startswith("/") or os.path.isabs(value) or ".." in parts


def inside(base: Path, *parts: str) -> Path | None:
    """``base/parts...`` with links resolved, or None when that leaves ``base``."""
    target = base.joinpath(*parts).resolve()
    return target if target.is_relative_to(base) else None


def _disposition(name: str, *, attachment: bool = False) -> str:
    safe = "".join(c for c in name if c.isascii() and c.isprintable() and c not in '"\\')
    value = f'filename="{safe}"'
    if safe != name:
        value += f"; filename*=UTF-8''{quote(name, safe='')}"
    return f"attachment; {value}" if attachment else value


# ---------------------------------------------------------------------------------------------
# /view


def split_annotation(name: str) -> tuple[str, str | None]:
    """``"x.png [input]"`` -> ``("x.png", "input")``."""
    match = ANNOTATION.match(name)
    return (match["name"], match["type"]) if match else (name, None)


# Folders shared by every user whose files belong to the job that made them: a creator
# fetches only what their own jobs' outputs name (inputs are shared, as in ComfyUI).
OWNED_TYPES = ("output", "temp")


async def view(request: Request) -> Response:
    query = request.query_params
    if "filename" not in query:
        raise HTTPError(404, "not_found", "filename is required")
    filename, annotated = split_annotation(query["filename"])
    file_type = annotated or query.get("type", "output") or "output"
    if not filename or _unsafe_part(filename):
        raise HTTPError(400, "invalid_filename", f"Invalid filename {filename!r}")
    base = base_dir(request, file_type)
    subfolder = query.get("subfolder", "")
    if "\0" in subfolder:
        raise HTTPError(400, "invalid_subfolder", "Invalid subfolder")
    path = existing_file(base, subfolder, filename, "The file is outside its folder",
                         f"{filename} not found")  # fmt: skip
    user = current_user(request)
    if file_type in OWNED_TYPES and not user.admin:
        owned = await run_in_threadpool(jobs_of(request).store.owns_file, user.name, file_type,
                                        subfolder, filename)  # fmt: skip
        if not owned:  # as if absent: whose files exist is not for a creator to learn
            raise HTTPError(404, "not_found", f"{filename} not found")
    name = path.name
    preview, channel = query.get("preview"), query.get("channel", "")
    if preview is not None:
        fmt, quality = _preview_format(preview, channel)
        data = await run_in_threadpool(_preview, path, channel, fmt, quality)
        return _image_response(data, f"image/{fmt}", name)
    if channel in ("rgb", "a"):
        data = await run_in_threadpool(_channel_png, path, channel)
        return _image_response(data, "image/png", name)
    media = mimetypes.guess_type(name)[0] or "application/octet-stream"
    headers = {"X-Content-Type-Options": "nosniff"}
    if media in UNSAFE_TYPES:
        media = "application/octet-stream"
        headers["Content-Disposition"] = _disposition(name, attachment=True)
    else:
        headers["Content-Disposition"] = _disposition(name)
    return FileResponse(path, media_type=media, headers=headers)


def _image_response(data: bytes, media: str, name: str) -> Response:
    headers = {"Content-Disposition": _disposition(name), "X-Content-Type-Options": "nosniff"}
    return Response(data, media_type=media, headers=headers)


def _preview_format(preview: str, channel: str) -> tuple[str, int]:
    parts = preview.split(";")
    fmt = parts[0] if parts[0] in ("webp", "jpeg") else "webp"
    if "a" in channel:
        fmt = "webp"  # an explicit alpha channel: JPEG has none
    quality = int(parts[-1]) if parts[-1].isdigit() else 90
    return fmt, max(1, min(quality, 100))


def _open_image(path: Path | io.BytesIO, name: str | None = None) -> Any:
    """An image decoded, if it is one and has at most ``MAX_PIXELS`` pixels (its size is
    read from the header before anything is decoded)."""
    from PIL import Image, UnidentifiedImageError

    name = name or getattr(path, "name", "the image")
    try:
        image = Image.open(path)
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise _too_large(name, f"{width}x{height}")
        image.load()
    except Image.DecompressionBombError:  # Pillow's own, far higher bound, at open
        raise _too_large(name, "larger than that") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise HTTPError(400, "invalid_image", f"{name} is not an image Pillow can read"
                        ) from exc  # fmt: skip
    return image


def _too_large(name: str, size: str) -> HTTPError:
    return HTTPError(413, "image_too_large", f"{name} is {size}: images of at most "
                     f"{MAX_PIXELS} pixels are decoded", limit=MAX_PIXELS)  # fmt: skip


def _with_channel(image: Any, channel: str) -> Any:
    from PIL import Image

    if channel == "rgb":
        return image.convert("RGB")
    if channel == "a":
        rgba = image.convert("RGBA")
        alpha_only = Image.new("RGBA", rgba.size, (0, 0, 0, 0))
        alpha_only.putalpha(rgba.getchannel("A"))
        return alpha_only
    return image


def _preview(path: Path, channel: str, fmt: str, quality: int) -> bytes:
    image = _with_channel(_open_image(path), channel)
    if fmt == "jpeg":
        image = image.convert("RGB")
    elif image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in
                              image.info else "RGB")  # fmt: skip
    buffer = io.BytesIO()
    image.save(buffer, format=fmt.upper(), quality=quality)
    return buffer.getvalue()


def _channel_png(path: Path, channel: str) -> bytes:
    buffer = io.BytesIO()
    _with_channel(_open_image(path), channel).save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# /upload/image and /upload/mask


async def upload_image(request: Request) -> JSONResponse:
    async with request.form() as form:  # closes the spooled upload afterwards
        image, file_type, subfolder, overwrite = _upload_fields(request, form)
        base = base_dir(request, file_type)
        data = await image.read()
    name = await run_in_threadpool(save_upload, base, subfolder, image.filename or "", data,
                                   overwrite)  # fmt: skip
    return JSONResponse({"name": name, "subfolder": subfolder, "type": file_type})


async def upload_mask(request: Request) -> JSONResponse:
    async with request.form() as form:
        image, file_type, subfolder, overwrite = _upload_fields(request, form)
        original = _original_path(request, form.get("original_ref"))
        base = base_dir(request, file_type)
        mask = await image.read()
    data = await run_in_threadpool(apply_mask, original, mask)
    name = await run_in_threadpool(save_upload, base, subfolder, image.filename or "", data,
                                   overwrite)  # fmt: skip
    return JSONResponse({"name": name, "subfolder": subfolder, "type": file_type})


def _upload_fields(request: Request, form: Any) -> tuple[UploadFile, str, str, bool]:
    image = form.get("image")
    if not isinstance(image, UploadFile) or not image.filename:
        raise HTTPError(400, "invalid_upload", "The form needs a file field 'image' with a name")
    file_type = _text_field(form, "type") or "input"
    subfolder = _text_field(form, "subfolder")
    overwrite = _text_field(form, "overwrite").lower() in ("true", "1")
    if not current_user(request).admin:
        # the folders are shared: a creator adds files, never replaces anyone's
        if file_type == "output":
            raise HTTPError(403, "forbidden", "Only an admin may upload into the output "
                            "folder; upload as type 'input'")  # fmt: skip
        overwrite = False
    bad_name = Path(image.filename).name in ("", ".") or image.filename.endswith("/")
    if bad_name or _unsafe_part(image.filename) or (subfolder and _unsafe_part(subfolder)):
        raise HTTPError(400, "invalid_path", "The file name and subfolder must stay in the folder")
    return image, file_type, subfolder, overwrite


def _text_field(form: Any, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _digest_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def numbered(name: str, n: int) -> str:
    stem, ext = os.path.splitext(name)
    return f"{stem} ({n}){ext}"


def save_upload(base: Path, subfolder: str, filename: str, data: bytes, overwrite: bool) -> str:
    """Store ``data`` as ``filename`` in ``base/subfolder``; returns the name used. Without
    ``overwrite`` an existing file with the same bytes is reused and a different one gets
    the next free ``name (n).ext``."""
    folder = inside(base, subfolder) if subfolder else base
    if folder is None or inside(folder, filename) is None:
        raise HTTPError(400, "invalid_path", "The file name and subfolder must stay in the folder")
    digest = hashlib.sha256(data).hexdigest()
    with _upload_lock:
        name, n = filename, 0
        while not overwrite:
            path = inside(folder, name)
            if path is None:
                raise HTTPError(400, "invalid_path", "The file name must stay in the folder")
            if not path.exists():
                break
            if path.is_file() and _digest_file(path) == digest:
                return name  # the same bytes are there already
            n += 1
            name = numbered(filename, n)
        path = inside(folder, name)
        if path is None or path.is_dir():
            raise HTTPError(400, "invalid_path", f"Cannot write {name!r} there")
        atomic_write(path, data, 0o644)  # uploads are public to the server
    return name


def _original_path(request: Request, raw: Any) -> Path:
    """The image a mask applies to, from the form's ``original_ref`` JSON."""
    try:
        ref = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        ref = None
    if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str):
        raise HTTPError(400, "invalid_original_ref",
                        "original_ref must be JSON like {\"filename\": ..., \"subfolder\": ..., "
                        "\"type\": ...}")  # fmt: skip
    filename, annotated = split_annotation(ref["filename"])
    subfolder = ref.get("subfolder") or ""
    if not filename or _unsafe_part(filename) or not isinstance(subfolder, str):
        raise HTTPError(400, "invalid_original_ref", "original_ref names an invalid file")
    base = base_dir(request, annotated or str(ref.get("type") or "output"))
    return existing_file(base, subfolder, filename, "original_ref is outside its folder",
                         f"The original image {filename} was not found")  # fmt: skip


def existing_file(base: Path, subfolder: str, filename: str, outside: str,
                  missing: str) -> Path:  # fmt: skip
    """``base/subfolder/filename``, confined to ``base`` (403 ``outside``) and present
    (404 ``missing``)."""
    folder = inside(base, subfolder) if subfolder else base
    path = inside(folder, filename) if folder is not None else None
    if path is None:
        raise HTTPError(403, "forbidden", outside)
    if not path.is_file():
        raise HTTPError(404, "not_found", missing)
    return path


def apply_mask(original: Path, mask: bytes) -> bytes:
    """The original image with the mask's alpha channel, as PNG (text chunks kept)."""
    from PIL import PngImagePlugin

    image = _open_image(original)
    with _open_image(io.BytesIO(mask), "The mask") as uploaded:
        alpha = uploaded.convert("RGBA").getchannel("A")
    if alpha.size != image.size:
        raise HTTPError(400, "invalid_mask", f"The mask is {alpha.size[0]}x{alpha.size[1]}, "
                        f"the image {image.size[0]}x{image.size[1]}")  # fmt: skip
    info = PngImagePlugin.PngInfo()
    for key, value in getattr(image, "text", {}).items():
        info.add_text(key, value)
    result = image.convert("RGBA")
    result.putalpha(alpha)
    buffer = io.BytesIO()
    result.save(buffer, format="PNG", pnginfo=info, compress_level=4)
    return buffer.getvalue()


def routes() -> list[BaseRoute]:
    return [
        *both("/view", view),
        *both("/upload/image", upload_image, ["POST"]),
        *both("/upload/mask", upload_mask, ["POST"]),
    ]
