"""ComfyUI's per-user storage: ``/users``, ``/settings`` and ``/userdata``.

Each caller has one directory, ``<user_dir>/<user>/``: ``default`` for the local admin (auth
off), the token's user name otherwise. Every path a request names is resolved (links
followed) and must stay inside that directory. ``/userdata`` errors are plain text, as
ComfyUI sends them; ``/settings`` errors are midrun's JSON errors.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Awaitable, Callable
from contextlib import suppress
from functools import wraps
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute

from midrun.core.errors import disk_full
from midrun.jobs.previews import MAX_EVERY
from midrun.server.auth import current_user
from midrun.server.errors import HTTPError, insufficient_storage
from midrun.server.requests import body_of
from midrun.server.routing import both

log = logging.getLogger(__name__)

SETTINGS_FILE = "comfy.settings.json"
DEFAULT_USER = "default"
#: Seeded on a user's first read: keep the frontend quiet and offline.
DEFAULT_SETTINGS: dict[str, Any] = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Notification.ShowVersionUpdates": False,
    "Comfy.VersionCompatibility.DisableWarnings": True,
    "Comfy.Workflow.ShowMissingModelsWarning": False,
}

_settings_lock = threading.Lock()


class Refused(Exception):
    """A ``/userdata`` refusal, answered as plain text with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Endpoint = Callable[[Request], Awaitable[Response]]


def _text_errors(endpoint: Endpoint) -> Endpoint:
    @wraps(endpoint)
    async def wrapper(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Refused as exc:
            return PlainTextResponse(exc.message, status_code=exc.status)

    return wrapper


# ---------------------------------------------------------------------------------------------
# Where a user's files live


def user_root(request: Request) -> Path:
    """The caller's directory (created on first use), already resolved."""
    server = request.app.state.server
    user = current_user(request)
    name = user.name if server.config.requires_auth else DEFAULT_USER
    base = Path(server.config.user_dir).resolve()
    root = (base / name).resolve()
    if name in ("", ".", "..") or root.parent != base:
        raise HTTPError(403, "forbidden", f"User {name!r} cannot have a user directory")
    if not root.is_dir():
        _create_user_dir(root)
    return root


#: What a new user directory holds, so the canvas's start-up reads find them (it asks for
#: these on every load; a 404 for each would be logged as an error in the browser).
USER_SKELETON_DIRS = ("workflows", "subgraphs")
USER_SKELETON_FILES = {"user.css": b"/* Your styles for the canvas. */\n",
                       "comfy.templates.json": b"[]"}  # fmt: skip


def _create_user_dir(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name in USER_SKELETON_DIRS:
        (root / name).mkdir(exist_ok=True)
    for name, data in USER_SKELETON_FILES.items():
        if not (root / name).exists():
            atomic_write(root / name, data)


def confined(root: Path, relative: str, *, allow_root: bool = False) -> Path:
    """``relative`` inside ``root``, links resolved; refuses anything that leaves it."""
    if "\0" in relative:
        raise Refused(400, "Invalid path")
    parts = relative.replace("\\", "/").split("/")
    if relative.startswith("/") or os.path.isabs(relative) or ".." in parts:
        raise Refused(403, "Invalid path")
    target = (root / relative).resolve()
    if not target.is_relative_to(root) or (target == root and not allow_root):
        raise Refused(403, "Invalid path")
    return target


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() == "true"


def _file_info(path: Path, relative_to: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": path.relative_to(relative_to).as_posix(), "size": st.st_size,
            "modified": int(st.st_mtime * 1000), "created": int(st.st_ctime * 1000)}  # fmt: skip


def atomic_write(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write to a temporary file beside ``path``, then rename it over ``path``. The file
    is private (0600) unless ``mode`` says otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------------------------
# /users


async def get_users(request: Request) -> JSONResponse:
    # Never a "users" key: the frontend would switch to its multi-user login page.
    return JSONResponse({"storage": "server", "migrated": True})


async def post_users(request: Request) -> JSONResponse:
    message = ("midrun manages users with tokens: create one with 'midrun users add NAME' "
               "and send it as 'Authorization: Bearer <token>'")  # fmt: skip
    return JSONResponse({"error": message}, status_code=400)


# ---------------------------------------------------------------------------------------------
# /settings


def _settings_path(request: Request) -> Path:
    return user_root(request) / SETTINGS_FILE


PREVIEW_SETTING = "midrun.Preview.EverySteps"


def preview_interval(request: Request) -> int | None:
    """The caller's preview interval setting (the canvas's midrun settings), if set to a
    whole number of steps."""
    value = read_settings(_settings_path(request)).get(PREVIEW_SETTING)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == int(value):
        return int(value) if 1 <= value <= MAX_EVERY else None
    return None


def read_settings(path: Path) -> dict[str, Any]:
    """The stored settings; the first read seeds (and stores) midrun's defaults."""
    try:
        # NaN / Infinity stored before bodies were read strictly read as null
        data = json.loads(path.read_text("utf-8"), parse_constant=lambda _: None)
    except FileNotFoundError:
        data = dict(DEFAULT_SETTINGS)
        atomic_write(path, json.dumps(data, indent=1).encode())
        return data
    except (OSError, ValueError) as exc:
        log.warning("unreadable settings file %s: %s", path, exc)
        return dict(DEFAULT_SETTINGS)
    return data if isinstance(data, dict) else dict(DEFAULT_SETTINGS)


def update_settings(path: Path, changes: dict[str, Any]) -> None:
    with _settings_lock:
        settings = read_settings(path)
        settings.update(changes)
        atomic_write(path, json.dumps(settings, indent=1).encode())


async def get_settings(request: Request) -> JSONResponse:
    path = _settings_path(request)
    with _settings_lock:
        return JSONResponse(read_settings(path))


async def post_settings(request: Request) -> Response:
    changes = await body_of(request)
    update_settings(_settings_path(request), changes)
    return Response(status_code=200)


async def get_setting(request: Request) -> JSONResponse:
    path = _settings_path(request)
    with _settings_lock:
        settings = read_settings(path)
    return JSONResponse(settings.get(request.path_params["id"]))


async def post_setting(request: Request) -> Response:
    value = await body_of(request, expect=None)
    update_settings(_settings_path(request), {request.path_params["id"]: value})
    return Response(status_code=200)


# ---------------------------------------------------------------------------------------------
# /userdata listings


@_text_errors
async def list_userdata(request: Request) -> JSONResponse:
    directory = request.query_params.get("dir", "")
    if not directory:
        raise Refused(400, "Directory not provided")
    root = user_root(request)
    try:
        base = confined(root, directory, allow_root=True)
    except Refused as exc:
        raise Refused(exc.status, "Invalid directory") from None
    if not base.is_dir():
        raise Refused(404, "Directory not found")
    files = _walk_files(root, base, recurse=_flag(request, "recurse"))
    if _flag(request, "full_info"):
        return JSONResponse([_file_info(f, base) for f in files])
    names = [f.relative_to(base).as_posix() for f in files]
    if _flag(request, "split"):
        return JSONResponse([[name, *name.split("/")] for name in names])
    return JSONResponse(names)


def _walk_files(root: Path, base: Path, *, recurse: bool) -> list[Path]:
    """Files under ``base`` (hidden ones skipped, as a glob would), sorted; entries whose
    links lead out of ``root`` are left out."""
    found: list[Path] = []
    for here, dirs, files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recurse else []
        for name in sorted(files):
            path = Path(here) / name
            if not name.startswith(".") and _inside(path, root) and path.is_file():
                found.append(path)
    return found


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root)


@_text_errors
async def list_userdata_v2(request: Request) -> JSONResponse:
    root = user_root(request)
    base = confined(root, request.query_params.get("path", "").strip("/"), allow_root=True)
    if not base.exists():
        return JSONResponse([])
    if not base.is_dir():
        raise Refused(400, "Path is not a directory")
    entries: list[dict[str, Any]] = []
    for here, dirs, files in os.walk(base):
        dirs[:] = [d for d in dirs if _inside(Path(here) / d, root)]
        for name in dirs:
            path = Path(here) / name
            entries.append({"name": name, "path": path.relative_to(root).as_posix(),
                            "type": "directory"})  # fmt: skip
        for name in files:
            path = Path(here) / name
            if not _inside(path, root):
                continue
            entry: dict[str, Any] = {"name": name, "path": path.relative_to(root).as_posix(),
                                     "type": "file"}  # fmt: skip
            try:
                st = path.stat()
                entry.update(size=st.st_size, modified=st.st_mtime)
            except OSError:
                pass
            entries.append(entry)
    entries.sort(key=lambda e: (e["type"] != "directory", e["name"].lower()))
    return JSONResponse(entries)


# ---------------------------------------------------------------------------------------------
# /userdata/{file} and /userdata/{file}/move/{dest}


def _segments(request: Request) -> list[str]:
    """The path after ``/userdata/``, split on the slashes the client really sent: a file
    is one percent-encoded segment (``workflows%2Fx.json``)."""
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes | bytearray):
        path = bytes(raw).decode("latin-1")
        _, sep, rest = path.partition("/userdata/")
        if sep:
            return [unquote(part, errors="strict") for part in rest.split("/")]
    return [request.path_params.get("rest", "")]  # no raw path: one decoded segment


@_text_errors
async def userdata_file(request: Request) -> Response:
    try:
        parts = _segments(request)
    except UnicodeDecodeError:
        raise Refused(400, "Invalid path") from None
    if request.method == "POST" and len(parts) == 3 and parts[1] == "move":
        return await _move(request, parts[0], parts[2])
    relative = "/".join(parts)  # literal slashes: taken as the path, leniently
    if not relative:
        raise Refused(400, "File not provided")
    root = user_root(request)
    path = confined(root, relative)
    if request.method == "GET":
        return _send(path)
    if request.method == "DELETE":
        if not path.is_file():
            raise Refused(404, "File not found")
        path.unlink()
        return Response(status_code=204)
    return await _write(request, root, path)


def _send(path: Path) -> Response:
    if not path.is_file():
        raise Refused(404, "File not found")
    headers = {"X-Content-Type-Options": "nosniff"}
    if path.name == "user.css":
        return FileResponse(path, media_type="text/css", headers=headers)
    return FileResponse(path, headers=headers, filename=path.name)


def _overwrite(request: Request) -> bool:
    # Only the literal "false" blocks (the frontend may send overwrite=undefined).
    return request.query_params.get("overwrite", "true").lower() != "false"


def _written(request: Request, root: Path, path: Path) -> JSONResponse:
    if _flag(request, "full_info"):
        return JSONResponse(_file_info(path, root))
    return JSONResponse(path.relative_to(root).as_posix())


async def _write(request: Request, root: Path, path: Path) -> Response:
    if path.exists() and not _overwrite(request):
        raise Refused(409, "File already exists")
    if path.is_dir():
        raise Refused(400, "A directory has that name")
    body = await request.body()
    try:
        atomic_write(path, body)
    except OSError as exc:
        if disk_full(exc):
            raise insufficient_storage(f"Writing {path.name}") from None
        raise Refused(400, f"Could not write the file: {exc.strerror or exc}") from None
    return _written(request, root, path)


async def _move(request: Request, source: str, dest: str) -> Response:
    if not source or not dest:
        raise Refused(400, "File not provided")
    root = user_root(request)
    src, dst = confined(root, source), confined(root, dest)
    if not src.is_file():
        raise Refused(404, "File not found")
    if dst.exists() and not _overwrite(request):
        raise Refused(409, "File already exists")
    if dst.is_dir():
        raise Refused(400, "A directory has that name")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    except OSError as exc:
        if disk_full(exc):
            raise insufficient_storage(f"Moving {src.name}") from None
        raise Refused(400, f"Could not move the file: {exc.strerror or exc}") from None
    return _written(request, root, dst)


def routes() -> list[BaseRoute]:
    return [
        *both("/users", get_users),
        *both("/users", post_users, ["POST"]),
        *both("/settings", get_settings),
        *both("/settings", post_settings, ["POST"]),
        *both("/settings/{id}", get_setting),
        *both("/settings/{id}", post_setting, ["POST"]),
        *both("/userdata", list_userdata),
        *both("/v2/userdata", list_userdata_v2),
        *both("/userdata/{rest:path}", userdata_file, ["GET", "POST", "DELETE"]),
    ]
