"""A ComfyUI client nobody here wrote (PyPI ``comfy-api-simplified``) drives midrun as it
would drive ComfyUI: queue a workflow, wait on the WebSocket, fetch the saved images."""

from __future__ import annotations

import io

from PIL import Image

from tests.server.conftest import LiveServer, txt2img


def test_comfy_api_simplified_gets_its_images(live: LiveServer) -> None:
    from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper

    api = ComfyApiWrapper(live.url)
    assert "KSampler" in api.get_object_info("KSampler")
    assert api.get_system_stats()["devices"]
    workflow = txt2img(steps=4, seed=11)
    for node in workflow.values():  # ComfyUI's "Save (API)" export titles every node
        node["_meta"] = {"title": node["class_type"]}
    workflow["9"]["_meta"] = {"title": "Save Image"}
    wrapper = ComfyWorkflowWrapper(workflow)
    wrapper.set_node_param("Save Image", "filename_prefix", "third_party")
    # The client returns WebSocket image frames when it saw any (midrun's previews), else
    # reads the history and downloads each saved image through /view.
    images = api.queue_and_wait_images(wrapper, "Save Image")
    assert images
    for data in images.values():  # previews, decoded by the test model's small VAE
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "JPEG" and image.size == (64, 64)
    # The finished job's history and saved image, through the same client.
    history = api.get_history(max(live.server.jobs.list(), key=lambda j: j.number).id)
    (entry,) = history.values()
    saved = entry["outputs"]["9"]["images"][0]
    assert saved["filename"].startswith("third_party")
    png = api.get_image(saved["filename"], saved["subfolder"], saved["type"])
    assert png == (live.server.config.output_dir / saved["filename"]).read_bytes()
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.size == (64, 64)
    assert api.get_queue() == {"queue_running": [], "queue_pending": []}
