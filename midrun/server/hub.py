"""(being written) The event hub: WebSocket clients and event fan-out."""

from __future__ import annotations

from typing import Any


class Hub:
    def __init__(self, server: Any) -> None:
        self.server = server

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
