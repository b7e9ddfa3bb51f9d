"""The server's users and their tokens under ``/api/auth/users`` (admins only)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from midrun.server.auth import require_admin
from midrun.server.errors import HTTPError
from midrun.server.requests import body_of, call, field, ok
from midrun.server.routing import Operation


async def list_users(request: Request) -> Response:
    require_admin(request)
    return ok(await call(request.app.state.server.users.list))


async def create_user(request: Request) -> Response:
    require_admin(request)
    body = await body_of(request)
    name = field(body, "name", str, required=True)
    role = field(body, "role", str, default="creator")
    token = await call(request.app.state.server.users.create, name, role)
    return ok({"name": name, "role": role, "token": token}, 201)


async def delete_user(request: Request) -> Response:
    require_admin(request)
    name = request.path_params["name"]
    if not await call(request.app.state.server.users.delete, name):
        raise HTTPError(404, "user_not_found", f"No user {name!r}; GET /api/auth/users lists "
                        "them")  # fmt: skip
    return ok({"deleted": name})


ROUTES: list[Operation] = [
    ("GET", "/api/auth/users", list_users),
    ("POST", "/api/auth/users", create_user),
    ("DELETE", "/api/auth/users/{name}", delete_user),
]
