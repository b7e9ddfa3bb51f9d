"""``midrun serve`` and ``midrun users``: run the server, manage its tokens.

The server's settings come from ``MIDRUN_*`` environment variables, then the flags given
(:meth:`ServerConfig.from_env`). Off loopback it requires bearer tokens; they are made with
``midrun users add NAME`` and stored hashed in ``<data>/auth/users.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from midrun.server.config import ServerConfig, is_loopback

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def env_flag(name: str) -> bool | None:
    """A boolean environment variable; None when unset (or not a yes/no word)."""
    value = os.environ.get(name, "").strip().lower()
    return True if value in TRUE else False if value in FALSE else None


def server_config(args: argparse.Namespace) -> ServerConfig:
    """The server's configuration from ``MIDRUN_*`` variables and the flags given."""
    devices = tuple(args.device) if getattr(args, "device", None) else None
    origins = tuple(args.cors_origin) if getattr(args, "cors_origin", None) else None
    return ServerConfig.from_env(
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        data_dir=args.data_dir,
        models_dir=getattr(args, "models_dir", None),
        input_dir=getattr(args, "input_dir", None),
        database_url=getattr(args, "database_url", None),
        devices=devices,
        workers=False if getattr(args, "no_workers", False) else None,
        auth=getattr(args, "auth", None),
        cors_origins=origins,
    )


def data_config(args: argparse.Namespace) -> ServerConfig:
    """Where a server keeps its data (for the commands that work on it without one)."""
    return ServerConfig.from_env(
        data_dir=getattr(args, "data_dir", None),
        models_dir=getattr(args, "models_dir", None),
        input_dir=getattr(args, "input_dir", None),
        database_url=getattr(args, "database_url", None),
    )


def tokens_file(config: ServerConfig) -> Path:
    return config.data_dir / "auth" / "users.json"


def refusal(config: ServerConfig) -> str | None:
    """Why this configuration must not be served, if it must not."""
    if config.auth is False and not is_loopback(config.host):
        return (f"refusing to serve {config.host} without auth: anyone who can reach it could "
                "run and control jobs. Use --auth (tokens from 'midrun users add NAME') or "
                "bind 127.0.0.1")  # fmt: skip
    return None


def url_of(config: ServerConfig) -> str:
    host = f"[{config.host}]" if ":" in config.host else config.host
    return f"http://{host}:{config.port}"


def banner(config: ServerConfig, users: int) -> list[str]:
    devices = ", ".join(config.devices) if config.workers else "none (--no-workers)"
    lines = [f"midrun serving {url_of(config)}",
             f"  data: {config.data_dir}  database: {config.database_url or 'SQLite in data'}",
             f"  workers: {devices}"]  # fmt: skip
    if config.requires_auth:
        lines.append(f"  auth: on; tokens from {tokens_file(config)} ({users} user(s)); add "
                     f"one with 'midrun users add NAME --data-dir {config.data_dir}'")  # fmt: skip
    else:
        lines.append("  auth: off (loopback only)")
    return lines


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from midrun.server.app import create_app
    from midrun.server.auth import RedactTokens, Users
    from midrun.server.state import Server

    config = server_config(args)
    why = refusal(config)
    if why is not None:
        print(f"error: {why}", file=sys.stderr)
        return 2
    server = Server(config)
    app = create_app(server)
    for line in banner(config, len(Users(tokens_file(config)).list())):
        print(line, flush=True)
    settings = uvicorn.Config(app, host=config.host, port=config.port, ws="websockets-sansio",
                              lifespan="on", log_level=args.log_level)  # logging set up here
    logging.getLogger("uvicorn.access").addFilter(RedactTokens())
    uvicorn.Server(settings).run()
    return 0


def cmd_users(args: argparse.Namespace) -> int:
    from midrun.core.errors import MidrunError
    from midrun.server.auth import Users

    users = Users(tokens_file(data_config(args)))
    if args.action == "list":
        for user in users.list():
            print(f"{user['name']}\t{user['role']}")
        return 0
    if args.action == "remove":
        if not users.delete(args.name):
            print(f"error: no user {args.name!r}", file=sys.stderr)
            return 1
        print(f"removed {args.name}")
        return 0
    try:
        token = users.create(args.name, args.role)
    except MidrunError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(f"user {args.name} ({args.role}); token, shown once:", file=sys.stderr)
    print(token)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    env = os.environ.get
    p = sub.add_parser("serve", help="run the HTTP/WebSocket server (ComfyUI's API + midrun's)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1; MIDRUN_HOST)")
    p.add_argument("--port", type=int, help="port (default 8188; MIDRUN_PORT)")
    p.add_argument("--data-dir", help="database, outputs, artifacts (data; MIDRUN_DATA_DIR)")
    p.add_argument("--models-dir", help="ComfyUI-style models folder (MIDRUN_MODELS_DIR)")
    p.add_argument("--input-dir", help="uploads and input images (MIDRUN_INPUT_DIR)")
    p.add_argument("--database-url", help="postgresql://... (default SQLite; MIDRUN_DATABASE_URL)")
    p.add_argument("--device", action="append",
                   help="cpu, cuda:0 or auto; repeat for one worker each (MIDRUN_DEVICES)")
    p.add_argument("--no-workers", action="store_true", help="serve the API only, run no jobs")
    p.add_argument("--auth", action=argparse.BooleanOptionalAction, default=env_flag("MIDRUN_AUTH"),
                   help="require bearer tokens (default: on exactly when not on loopback)")
    p.add_argument("--cors-origin", action="append", help="allow this browser origin (repeatable)")
    p.add_argument("--log-level", default=env("MIDRUN_LOG_LEVEL", "info"))
    p.set_defaults(fn=cmd_serve)

    p = sub.add_parser("users", help="manage the server's users and tokens")
    p.add_argument("--data-dir", help="the server's data directory (MIDRUN_DATA_DIR)")
    actions = p.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="add a user (or give one a new token)")
    add.add_argument("name")
    add.add_argument("--role", choices=("creator", "admin"), default="creator")
    actions.add_parser("list", help="list users and roles")
    remove = actions.add_parser("remove", help="remove a user (their token stops working)")
    remove.add_argument("name")
    for action in (add, actions.choices["list"], remove):
        action.add_argument("--data-dir", default=argparse.SUPPRESS)
    p.set_defaults(fn=cmd_users)
