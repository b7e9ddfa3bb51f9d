"""The canvas is served: the pinned ComfyUI frontend at ``/`` (revalidated on each load)
with the legacy script shims extensions import."""

from __future__ import annotations

import httpx


def test_the_frontend_page_and_its_scripts_are_served(http: httpx.Client) -> None:
    page = http.get("/")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-cache"
    assert "<div id=\"vue-app\"" in page.text or "vue-app" in page.text
    api = http.get("/scripts/api.js")
    assert api.status_code == 200 and "javascript" in api.headers["content-type"]
    asset = next(part.split('"')[0] for part in page.text.split('src="')[1:]
                 if part.startswith("./assets/") or part.startswith("/assets/"))  # fmt: skip
    assert http.get(asset.lstrip(".")).status_code == 200
    assert http.get("/no/such/file.js").status_code == 404
    # ComfyUI's API routes are not shadowed by the static mount.
    assert http.get("/api/system_stats").json()["system"]["comfyui_version"]
