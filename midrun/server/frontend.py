"""(being written)"""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute


def routes(server: Any) -> list[BaseRoute]:
    return []
