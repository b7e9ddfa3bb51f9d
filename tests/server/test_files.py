"""ComfyUI's file and catalogue routes over real HTTP: /view, /upload/image, /upload/mask,
the model listings and the start-up lists."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import httpx
import pytest
from PIL import Image

from midrun.diffusion.paths import KINDS
from midrun.server import files
from tests.server.conftest import CKPT, LiveServer


def png(color: tuple[int, ...], mode: str = "RGBA", size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def folder(live: LiveServer, kind: str) -> Path:
    config = live.server.config
    return Path({"output": config.output_dir, "input": config.upload_dir,
                 "temp": config.temp_dir}[kind])  # fmt: skip


def upload(http: httpx.Client, name: str, data: bytes, route: str = "/api/upload/image",
           **fields: str) -> httpx.Response:  # fmt: skip
    return http.post(route, files={"image": (name, data, "image/png")}, data=fields)


# ---------------------------------------------------------------------------------------------
# /upload/image


def test_upload_numbering_and_reuse(live: LiveServer, http: httpx.Client) -> None:
    red, blue, green = png((255, 0, 0, 255)), png((0, 0, 255, 255)), png((0, 255, 0, 255))
    r = upload(http, "pic.png", red)
    assert r.status_code == 200
    assert r.json() == {"name": "pic.png", "subfolder": "", "type": "input"}
    stored = folder(live, "input") / "pic.png"
    assert stored.read_bytes() == red
    mtime = stored.stat().st_mtime_ns

    assert upload(http, "pic.png", red).json()["name"] == "pic.png"  # same bytes: reused
    assert stored.stat().st_mtime_ns == mtime
    assert upload(http, "pic.png", blue).json()["name"] == "pic (1).png"
    assert upload(http, "pic.png", green).json()["name"] == "pic (2).png"
    assert upload(http, "pic.png", blue).json()["name"] == "pic (1).png"
    assert (folder(live, "input") / "pic (2).png").read_bytes() == green

    r = upload(http, "pic.png", green, route="/upload/image", overwrite="true")
    assert r.json()["name"] == "pic.png" and stored.read_bytes() == green


def test_upload_type_and_subfolder(live: LiveServer, http: httpx.Client) -> None:
    data = png((1, 2, 3, 4))
    r = upload(http, "s.png", data, type="temp", subfolder="a/b")
    assert r.json() == {"name": "s.png", "subfolder": "a/b", "type": "temp"}
    assert (folder(live, "temp") / "a" / "b" / "s.png").read_bytes() == data
    r = upload(http, "o.png", data, type="output")
    assert r.status_code == 200 and (folder(live, "output") / "o.png").exists()


@pytest.mark.parametrize(("name", "fields"), [
    ("x.png", {"type": "bogus"}),
    ("x.png", {"subfolder": "../escape"}),
    ("x.png", {"subfolder": "/tmp"}),
    ("../x.png", {}),
    ("", {}),
])  # fmt: skip
def test_upload_refusals(live: LiveServer, http: httpx.Client, name: str,
                         fields: dict[str, str]) -> None:  # fmt: skip
    r = upload(http, name, png((0, 0, 0, 0)), **fields)
    assert r.status_code == 400, r.text
    assert not (folder(live, "input").parent / "escape").exists()


def test_upload_without_file(http: httpx.Client) -> None:
    assert http.post("/api/upload/image", data={"type": "input"}).status_code == 400
    assert http.post("/api/upload/image", json={"image": "x"}).status_code == 400


def test_upload_refuses_symlinked_subfolder(live: LiveServer, http: httpx.Client,
                                            tmp_path: Path) -> None:  # fmt: skip
    link = folder(live, "input") / "linked_out"
    if not link.is_symlink():
        os.symlink(tmp_path, link)
    assert upload(http, "x.png", png((0, 0, 0, 0)), subfolder="linked_out").status_code == 400
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# /upload/mask


def test_upload_mask_applies_alpha(live: LiveServer, http: httpx.Client) -> None:
    upload(http, "photo.png", png((10, 20, 30), mode="RGB"), subfolder="m")
    mask = Image.new("RGBA", (8, 6), (0, 0, 0, 255))
    mask.putpixel((2, 3), (0, 0, 0, 0))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    ref = json.dumps({"filename": "photo.png", "subfolder": "m", "type": "input"})
    r = http.post("/api/upload/mask", files={"image": ("clipspace-mask.png", buffer.getvalue())},
                  data={"original_ref": ref, "subfolder": "clipspace"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "clipspace-mask.png", "subfolder": "clipspace", "type": "input"}
    with Image.open(folder(live, "input") / "clipspace" / "clipspace-mask.png") as saved:
        assert saved.format == "PNG" and saved.mode == "RGBA"
        assert saved.getpixel((2, 3)) == (10, 20, 30, 0)
        assert saved.getpixel((0, 0)) == (10, 20, 30, 255)


@pytest.mark.parametrize(("ref", "status"), [
    ("not json", 400),
    (json.dumps({"filename": "nope.png", "type": "input"}), 404),
    (json.dumps({"filename": "../x.png", "type": "input"}), 400),
    (json.dumps({"filename": "photo.png", "subfolder": "../..", "type": "input"}), 403),
    (json.dumps({"filename": "photo.png", "type": "bogus"}), 400),
    (json.dumps({"filename": "small.png", "type": "input"}), 400),  # sizes differ
])  # fmt: skip
def test_upload_mask_refusals(http: httpx.Client, ref: str, status: int) -> None:
    upload(http, "small.png", png((0, 0, 0), mode="RGB", size=(2, 2)))
    r = http.post("/api/upload/mask", files={"image": ("mask.png", png((0, 0, 0, 0)))},
                  data={"original_ref": ref})  # fmt: skip
    assert r.status_code == status, r.text


# ---------------------------------------------------------------------------------------------
# /view


@pytest.fixture
def image(live: LiveServer) -> Image.Image:
    """out.png in the output folder (and sub/out.png, and in.png in input): a red image
    whose left half is half transparent."""
    picture = Image.new("RGBA", (16, 8), (255, 0, 0, 255))
    for x in range(8):
        for y in range(8):
            picture.putpixel((x, y), (255, 0, 0, 128))
    for path in (folder(live, "output") / "out.png", folder(live, "output") / "sub" / "out.png",
                 folder(live, "input") / "in.png"):  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        picture.save(path)
    return picture


def test_view_sends_file(live: LiveServer, http: httpx.Client, image: Image.Image) -> None:
    r = http.get("/api/view", params={"filename": "out.png"})
    assert r.status_code == 200
    assert r.content == (folder(live, "output") / "out.png").read_bytes()
    assert r.headers["content-type"] == "image/png"
    assert r.headers["content-disposition"] == 'filename="out.png"'
    assert r.headers["x-content-type-options"] == "nosniff"
    assert http.get("/view", params={"filename": "out.png", "subfolder": "sub",
                                     "type": "output"}).status_code == 200  # fmt: skip
    assert http.get("/view", params={"filename": "in.png", "type": "input"}).status_code == 200


def test_view_annotation_overrides_type(http: httpx.Client, image: Image.Image) -> None:
    r = http.get("/api/view", params={"filename": "in.png [input]", "type": "output"})
    assert r.status_code == 200 and r.headers["content-disposition"] == 'filename="in.png"'
    assert http.get("/api/view", params={"filename": "in.png [output]"}).status_code == 404


def test_view_preview_formats(http: httpx.Client, image: Image.Image) -> None:
    for preview, media, fmt in (("webp;90", "image/webp", "WEBP"),
                                ("jpeg;80", "image/jpeg", "JPEG"),
                                ("bmp;50", "image/webp", "WEBP")):  # fmt: skip
        r = http.get("/api/view", params={"filename": "out.png", "preview": preview})
        assert r.status_code == 200 and r.headers["content-type"] == media
        with Image.open(io.BytesIO(r.content)) as decoded:
            assert decoded.format == fmt and decoded.size == (16, 8)
            assert decoded.convert("RGB").getpixel((12, 4))[0] > 200  # still red
    # an explicit alpha channel forces webp
    r = http.get("/api/view", params={"filename": "out.png", "preview": "jpeg;80",
                                      "channel": "a"})  # fmt: skip
    assert r.headers["content-type"] == "image/webp"


def test_view_channels(http: httpx.Client, image: Image.Image) -> None:
    r = http.get("/api/view", params={"filename": "out.png", "channel": "a"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(r.content)) as alpha:
        assert alpha.mode == "RGBA"
        assert alpha.getpixel((2, 2)) == (0, 0, 0, 128)
        assert alpha.getpixel((12, 2)) == (0, 0, 0, 255)
    r = http.get("/api/view", params={"filename": "out.png", "channel": "rgb"})
    with Image.open(io.BytesIO(r.content)) as rgb:
        assert rgb.mode == "RGB" and rgb.getpixel((2, 2)) == (255, 0, 0)


def test_view_active_content_is_a_download(live: LiveServer, http: httpx.Client) -> None:
    for name in ("page.html", "drawing.svg", "code.js"):
        (folder(live, "output") / name).write_text("<script>alert(1)</script>")
        r = http.get("/api/view", params={"filename": name})
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["content-disposition"] == f'attachment; filename="{name}"'
        assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(("params", "status"), [
    ({}, 404),
    ({"filename": ""}, 400),
    ({"filename": "/etc/passwd"}, 400),
    ({"filename": "../data/output/out.png"}, 400),
    ({"filename": "sub/../out.png"}, 400),
    ({"filename": "a\0b.png"}, 400),
    ({"filename": "out.png", "type": "bogus"}, 400),
    ({"filename": "out.png", "subfolder": "../../"}, 403),
    ({"filename": "passwd", "subfolder": "/etc"}, 403),
    ({"filename": "missing.png"}, 404),
    ({"filename": "sub"}, 404),
])  # fmt: skip
def test_view_refusals(http: httpx.Client, image: Image.Image, params: dict[str, str],
                       status: int) -> None:  # fmt: skip
    r = http.get("/api/view", params=params)
    assert r.status_code == status, r.text


def test_view_refuses_links_out(live: LiveServer, http: httpx.Client, tmp_path: Path) -> None:
    (tmp_path / "secret.png").write_bytes(png((0, 0, 0, 0)))
    link = folder(live, "output") / "escape"
    if not link.is_symlink():
        os.symlink(tmp_path, link)
    r = http.get("/api/view", params={"filename": "secret.png", "subfolder": "escape"})
    assert r.status_code == 403
    r = http.get("/api/view", params={"filename": "escape/secret.png"})
    assert r.status_code == 403


# ---------------------------------------------------------------------------------------------
# Models


def test_models(live: LiveServer, http: httpx.Client) -> None:
    assert http.get("/api/models").json() == list(KINDS)
    assert CKPT in http.get("/models/checkpoints").json()
    assert http.get("/api/models/loras").json() == []
    assert http.get("/api/models/not_a_kind").status_code == 404


def test_experiment_models(live: LiveServer, http: httpx.Client) -> None:
    kinds = http.get("/api/experiment/models").json()
    assert [k["name"] for k in kinds] == list(KINDS)
    checkpoints = kinds[0]
    assert checkpoints["folders"] == [str(live.server.models_dir / "checkpoints")]
    assert ".safetensors" in checkpoints["extensions"]
    assert checkpoints["extensions"] == sorted(checkpoints["extensions"])
    models = http.get("/api/experiment/models/checkpoints").json()
    mine = next(m for m in models if m["name"] == CKPT)
    assert mine["pathIndex"] == 0
    assert mine["size"] == (live.server.models_dir / "checkpoints" / CKPT).stat().st_size
    assert isinstance(mine["modified"], float) and isinstance(mine["created"], float)
    assert http.get("/api/experiment/models/nope").status_code == 404


def test_folder_paths_is_internal_only(live: LiveServer, http: httpx.Client) -> None:
    paths = http.get("/internal/folder_paths").json()
    assert paths == {k: [str(live.server.models_dir / k)] for k in KINDS}
    assert http.get("/api/internal/folder_paths").status_code == 404


# ---------------------------------------------------------------------------------------------
# Start-up lists


@pytest.mark.parametrize(("route", "expected"), [
    ("/embeddings", []),
    ("/i18n", {}),
    ("/node_replacements", {}),
    ("/global_subgraphs", {}),
])  # fmt: skip
@pytest.mark.parametrize("prefix", ["", "/api"])
def test_empty_lists(http: httpx.Client, prefix: str, route: str, expected: object) -> None:
    r = http.get(prefix + route)
    assert r.status_code == 200 and r.json() == expected


def test_extensions(http: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "WEB_DIR", tmp_path / "absent")
    assert http.get("/api/extensions").json() == []
    (tmp_path / "sub").mkdir()
    for name in ("a.js", "sub/b c.js", "style.css"):
        (tmp_path / name).write_text("")
    monkeypatch.setattr(files, "WEB_DIR", tmp_path)
    (tmp_path / "c d.js").write_text("")
    assert http.get("/extensions").json() == ["/extensions/midrun/a.js",
                                              "/extensions/midrun/c%20d.js"]  # fmt: skip


def test_workflow_templates(http: httpx.Client) -> None:
    expected = sorted(p.stem for p in files.EXAMPLES_DIR.glob("*.json"))
    assert expected, "midrun ships example workflows"
    assert http.get("/api/workflow_templates").json() == {"midrun": expected}
    name = expected[0]
    r = http.get(f"/api/workflow_templates/midrun/{name}.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    # API-format examples are laid out for the canvas; converting back gives the example.
    document = r.json()
    assert document["version"] == 0.4 and document["nodes"] and document["links"]
    original = json.loads((files.EXAMPLES_DIR / f"{name}.json").read_text())
    assert {n["type"] for n in document["nodes"]} == {v["class_type"] for v in original.values()}
    for bad in (f"/api/workflow_templates/other/{name}.json",
                "/api/workflow_templates/midrun/missing.json",
                "/api/workflow_templates/midrun/a%20b.json",
                f"/api/workflow_templates/midrun/..%2Fexamples%2F{name}.json"):  # fmt: skip
        assert http.get(bad).status_code == 404, bad


def pixel_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A PNG whose header says 20000x20000 grey pixels (400 megapixels), a few hundred
    bytes on disk: what a decompression bomb looks like before it is decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * 4)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows)
            + chunk(b"IEND", b""))  # fmt: skip


def test_images_over_the_pixel_limit_are_refused_not_decoded(http: httpx.Client) -> None:
    assert upload(http, "bomb.png", pixel_bomb(), subfolder="bombs").status_code == 200
    for params in ({"preview": "webp;90"}, {"channel": "rgb"}, {"channel": "a"}):
        r = http.get("/api/view", params={"filename": "bomb.png", "subfolder": "bombs",
                                          "type": "input", **params})  # fmt: skip
        assert r.status_code == 413, (params, r.text)
        assert r.json()["error"]["type"] == "image_too_large"
        assert str(files.MAX_PIXELS) in r.json()["error"]["message"]
    as_original = json.dumps({"filename": "bomb.png", "subfolder": "bombs", "type": "input"})
    r = http.post("/api/upload/mask", files={"image": ("mask.png", png((0, 0, 0, 0)))},
                  data={"original_ref": as_original})  # fmt: skip
    assert r.status_code == 413
    upload(http, "small.png", png((0, 0, 0), mode="RGB", size=(2, 2)))
    small = json.dumps({"filename": "small.png", "type": "input"})
    r = http.post("/api/upload/mask", files={"image": ("mask.png", pixel_bomb())},
                  data={"original_ref": small})  # fmt: skip
    assert r.status_code == 413
    assert "The mask" in r.json()["error"]["message"]


def test_preview_image_results_are_served_from_the_temp_folder(live: LiveServer,
                                                                http: httpx.Client) -> None:
    from tests.server.conftest import txt2img

    prompt = txt2img(steps=1)
    prompt["9"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    job_id = http.post("/prompt", json={"prompt": prompt}).json()["prompt_id"]
    done = live.server.jobs.wait(job_id, timeout=120)
    assert done.state.value == "completed", done.error
    image = http.get(f"/history/{job_id}").json()[job_id]["outputs"]["9"]["images"][0]
    assert image["type"] == "temp"
    answer = http.get("/view", params=image)
    assert answer.status_code == 200 and answer.content.startswith(b"\x89PNG")
    assert (live.server.config.temp_dir / image["subfolder"] / image["filename"]).is_file()
