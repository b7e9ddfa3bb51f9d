"""Server-sent events: midrun's ``midrun.*`` events for clients that want no WebSocket
(``curl -N``, EventSource). ``?job_id=`` follows one job."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import BaseRoute, Route

from midrun.server.hub import Client

KEEPALIVE_SECONDS = 15.0


async def stream(request: Request) -> StreamingResponse:
    hub = request.app.state.server.hub
    client = hub.sse_client(request.scope.get("user"), request.query_params.get("job_id"))
    return StreamingResponse(_frames(hub, client), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache",
                                      "X-Accel-Buffering": "no"})  # fmt: skip


async def _frames(hub: object, client: Client) -> AsyncIterator[str]:
    number = 0
    try:
        yield ": midrun events\n\n"
        while client.alive:
            try:
                message = await asyncio.wait_for(client.queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            if message is None:
                return
            if isinstance(message, (bytes, asyncio.Future)) or \
                    not message["type"].startswith("midrun."):  # fmt: skip
                continue  # ComfyUI's own messages and previews are WebSocket-only
            number += 1
            payload = json.dumps(message["data"], default=str)
            yield f"id: {number}\nevent: {message['type']}\ndata: {payload}\n\n"
    finally:
        hub.drop(client)  # type: ignore[attr-defined]


def routes() -> list[BaseRoute]:
    return [Route("/api/events", stream)]
