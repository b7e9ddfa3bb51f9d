"""What the server is: node definitions (``/object_info``), system information
(``/system_stats``) and feature flags (``/features``), as ComfyUI answers them."""

from __future__ import annotations

import os
import sys
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from midrun.server.comfy import VERSION
from midrun.server.hub import SERVER_FLAGS
from midrun.server.routing import both, server_of
from midrun.server.state import Server


async def object_info(request: Request) -> Response:
    server = server_of(request)
    return JSONResponse(await run_in_threadpool(server.registry.object_info))


async def object_info_one(request: Request) -> Response:
    server = server_of(request)
    declared = server.registry.get(request.path_params["node_class"])
    if declared is None:
        return JSONResponse({})
    entry = await run_in_threadpool(server.registry.object_info_entry, declared)
    return JSONResponse({declared.class_type: entry})


async def system_stats(request: Request) -> Response:
    server = server_of(request)
    return JSONResponse(await run_in_threadpool(_system_stats, server))


def _system_stats(server: Server) -> dict[str, Any]:
    import midrun

    total, free = _memory()
    devices = []
    torch_version = ""
    try:
        import torch

        torch_version = torch.__version__
        for index in range(torch.cuda.device_count()):
            free_b, total_b = torch.cuda.mem_get_info(index)
            devices.append({"name": torch.cuda.get_device_name(index), "type": "cuda",
                            "index": index, "vram_total": total_b, "vram_free": free_b,
                            "torch_vram_total": total_b, "torch_vram_free": free_b})  # fmt: skip
    except ImportError:
        pass
    if not devices:
        devices.append({"name": "cpu", "type": "cpu", "index": 0, "vram_total": total,
                        "vram_free": free, "torch_vram_total": total,
                        "torch_vram_free": free})  # fmt: skip
    packages = comfy_packages()
    installed = {p["name"]: p["installed"] for p in packages}
    # The process's own arguments; midrun has no API nodes, which the frontend reads from
    # this flag (it then skips their release notes), so it is said when not given.
    argv = list(sys.argv) if "--disable-api-nodes" in sys.argv else [*sys.argv,
                                                                       "--disable-api-nodes"]
    return {
        "system": {
            "os": sys.platform, "ram_total": total, "ram_free": free,
            "comfyui_version": VERSION, "midrun_version": midrun.__version__,
            # midrun serves the frontend it is installed with: that one is what it needs
            "required_frontend_version": installed.get("comfyui-frontend-package"),
            "installed_templates_version": installed.get("comfyui-workflow-templates"),
            "required_templates_version": installed.get("comfyui-workflow-templates"),
            "comfy_package_versions": packages,
            "python_version": sys.version, "pytorch_version": torch_version,
            "embedded_python": False, "deploy_environment": "midrun",
            "argv": argv,
        },
        "devices": devices,
    }  # fmt: skip


def comfy_packages() -> list[dict[str, Any]]:
    """The installed ``comfy*`` distributions (the frontend, its templates...), as
    ComfyUI lists its own: ``{name, installed, required}``."""
    from importlib.metadata import distributions

    found = {}
    for dist in distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name.startswith("comfy") and name not in found:
            found[name] = dist.version
    return [{"name": n, "installed": v, "required": v} for n, v in sorted(found.items())]


def _memory() -> tuple[int, int]:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return info["MemTotal"], info.get("MemAvailable", info["MemFree"])
    except (OSError, KeyError, ValueError):
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return pages, pages


async def features(request: Request) -> Response:
    return JSONResponse(SERVER_FLAGS)


def routes() -> list[BaseRoute]:
    return [
        *both("/object_info", object_info),
        *both("/object_info/{node_class}", object_info_one),
        *both("/system_stats", system_stats),
        *both("/features", features),
    ]
