"""How a server is set up: flags, environment variables and their defaults."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

ENV_PREFIX = "MIDRUN_"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8188  # ComfyUI's port: its clients find midrun where they look
    data_dir: Path = Path("data")
    models_dir: Path | None = None
    input_dir: Path | None = None
    database_url: str | None = None
    devices: tuple[str, ...] = ("auto",)
    workers: bool = True  # run a worker per device in this process
    max_body_bytes: int = 100 * 1024 * 1024  # uploads and JSON bodies
    max_json_bytes: int = 16 * 1024 * 1024
    preview_max_size: int = 512  # WebSocket previews fit in this square
    cors_origins: tuple[str, ...] = ()  # CORS stays off unless origins are named
    auth: bool | None = None  # None: required exactly when not bound to loopback
    frontend_dir: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def requires_auth(self) -> bool:
        if self.auth is not None:
            return self.auth
        return not is_loopback(self.host)

    @property
    def user_dir(self) -> Path:
        return self.data_dir / "user"

    @property
    def output_dir(self) -> Path:
        return self.data_dir / "output"

    @property
    def upload_dir(self) -> Path:
        return self.input_dir or self.data_dir / "input"

    @property
    def temp_dir(self) -> Path:
        return self.data_dir / "temp"

    @classmethod
    def from_env(cls, **overrides: object) -> ServerConfig:
        """Defaults, then ``MIDRUN_*`` environment variables, then ``overrides`` (flags
        given on the command line; None means not given)."""
        env = os.environ
        values: dict[str, object] = {}
        if ENV_PREFIX + "HOST" in env:
            values["host"] = env[ENV_PREFIX + "HOST"]
        if ENV_PREFIX + "PORT" in env:
            values["port"] = int(env[ENV_PREFIX + "PORT"])
        for name in ("data_dir", "models_dir", "input_dir"):
            key = ENV_PREFIX + name.upper()
            if key in env:
                values[name] = Path(env[key])
        if ENV_PREFIX + "DATABASE_URL" in env:
            values["database_url"] = env[ENV_PREFIX + "DATABASE_URL"]
        if ENV_PREFIX + "DEVICES" in env:
            values["devices"] = tuple(env[ENV_PREFIX + "DEVICES"].split(","))
        if ENV_PREFIX + "CORS_ORIGINS" in env:
            origins = env[ENV_PREFIX + "CORS_ORIGINS"].split(",")
            values["cors_origins"] = tuple(o for o in origins if o)
        values.update({k: v for k, v in overrides.items() if v is not None})
        for name in ("data_dir", "models_dir", "input_dir", "frontend_dir"):
            if isinstance(values.get(name), str):
                values[name] = Path(str(values[name]))
        return cls(**values)  # type: ignore[arg-type]


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
