"""Who is asking. On loopback with auth off, everyone is the local admin. Otherwise a
bearer token (header ``Authorization: Bearer``, or ``?token=`` / cookie ``midrun_token``
for WebSockets, EventSource and the browser page) names a user with a role:

* ``creator``: submits jobs and controls its own;
* ``admin``: every job, the pipeline pause, user management.

Tokens are stored hashed (SHA-256) in ``<data>/auth/users.json``.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from midrun.server.errors import HTTPError

ROLES = ("creator", "admin")
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: str

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    def may_see(self, owner: str | None) -> bool:
        """The one visibility rule: admins see every job, creators their own."""
        return self.admin or owner == self.name


LOCAL = User("local", "admin")


class Users:
    """The token file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cached: tuple[tuple[int, int, int] | None, dict[str, Any]] = (None, {})

    def _read(self) -> dict[str, Any]:
        """The file's users, read again only when it changed (its inode, size or
        modification time), not on every request."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return {"users": {}}
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        seen, data = self._cached
        if seen != stamp:
            data = json.loads(self.path.read_text("utf-8"))
            self._cached = (stamp, data)
        return data  # shared: callers that change it work on a copy (_copy)

    def _copy(self) -> dict[str, Any]:
        return copy.deepcopy(self._read())

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1), "utf-8")
        os.chmod(tmp, 0o600)
        tmp.replace(self.path)

    def list(self) -> list[dict[str, str]]:
        users = self._read()["users"]
        return [{"name": n, "role": u["role"]} for n, u in sorted(users.items())]

    def create(self, name: str, role: str = "creator") -> str:
        """Add (or re-key) a user; returns the new token, shown once."""
        if not NAME.match(name) or set(name) == {"."}:
            raise HTTPError(400, "invalid_user",
                            "User names are 1-64 letters, digits, '_', '.' or '-'")
        if role not in ROLES:
            raise HTTPError(400, "invalid_role", f"Role must be one of {', '.join(ROLES)}")
        token = "mr_" + secrets.token_urlsafe(32)
        with self._lock:
            data = self._copy()
            data["users"][name] = {"role": role, "token_sha256": _digest(token)}
            self._write(data)
        return token

    def delete(self, name: str) -> bool:
        with self._lock:
            data = self._copy()
            found = data["users"].pop(name, None) is not None
            if found:
                self._write(data)
        return found

    def verify(self, token: str) -> User | None:
        """The token's user. Every entry is compared, found or not, so the time taken
        says nothing about the token."""
        digest = _digest(token)
        found: User | None = None
        for name, entry in self._read()["users"].items():
            if hmac.compare_digest(entry.get("token_sha256", ""), digest) and found is None:
                found = User(name, entry["role"])
        return found


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_of(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return conn.query_params.get("token") or conn.cookies.get("midrun_token")


class AuthMiddleware:
    """Puts the caller in ``scope["user"]``; refuses with 401 when a token is required
    and missing or wrong. ``open_prefixes`` (the static page) need no token."""

    def __init__(self, app: ASGIApp, *, users: Users, required: bool,
                 open_prefixes: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.app = app
        self.users = users
        self.required = required
        self.open_prefixes = open_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if not self.required:
            scope["user"] = LOCAL
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        token = token_of(conn)
        user = self.users.verify(token) if token else None
        if user is None:
            path = scope.get("path", "")
            if scope["type"] == "http" and (path == "/" or path.startswith(self.open_prefixes)):
                scope["user"] = None
                await self.app(scope, receive, send)
                return
            await _refuse(scope, receive, send, token is not None)
            return
        scope["user"] = user
        await self.app(scope, receive, send)


async def _refuse(scope: Scope, receive: Receive, send: Send, had_token: bool) -> None:
    message = ("The token is not valid" if had_token else
               "This server requires a bearer token: send 'Authorization: Bearer <token>' "
               "(create one with 'midrun users add NAME')")  # fmt: skip
    if scope["type"] == "websocket":
        # Accepted, then closed with 4401, so that clients (browsers included) can read
        # why; refusing the handshake would only show them an HTTP 403.
        if (await receive())["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 4401, "reason": message[:120]})
        return
    body = json.dumps({"error": {"type": "unauthorized", "message": message}}).encode()
    await send({"type": "http.response.start", "status": 401,
                "headers": [(b"content-type", b"application/json"),
                            (b"www-authenticate", b"Bearer")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


_TOKEN_VALUE = re.compile(r"(?<=[?&]token=)[^&\s\"]*")


def redact_tokens(text: str) -> str:
    """``text`` with every ``token=`` query value replaced (for logs)."""
    return _TOKEN_VALUE.sub("[redacted]", text)


class RedactTokens(logging.Filter):
    """Keeps ``?token=`` values out of a log (uvicorn's access log puts the full path,
    query included, in its record's arguments)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_tokens(a) if isinstance(a, str) else a
                                for a in record.args)  # fmt: skip
        if isinstance(record.msg, str):
            record.msg = redact_tokens(record.msg)
        return True


def current_user(conn: HTTPConnection) -> User:
    user = conn.scope.get("user")
    if user is None:
        raise HTTPError(401, "unauthorized", "Sign in with a bearer token")
    return user


def require_admin(conn: HTTPConnection) -> User:
    user = current_user(conn)
    if not user.admin:
        raise HTTPError(403, "forbidden",
                        f"Only an admin may do this; {user.name} is a {user.role}")
    return user


def visible_owner(conn: HTTPConnection) -> str | None:
    """Whose jobs the caller may see: ``None`` (everyone's) for an admin, else their own
    name. The one rule every listing (queue, history, jobs) filters by."""
    user = current_user(conn)
    return None if user.admin else user.name


def may_see(conn: HTTPConnection, owner: str | None) -> bool:
    return current_user(conn).may_see(owner)


def check_owner(conn: HTTPConnection, owner: str | None, what: str) -> User:
    """Creators control their own jobs; admins control all."""
    user = current_user(conn)
    if not user.may_see(owner):
        raise HTTPError(403, "forbidden", f"{what} belongs to {owner or 'nobody'}; "
                        f"{user.name} may control only their own jobs")  # fmt: skip
    return user
