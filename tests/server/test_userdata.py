"""ComfyUI's per-user routes over real HTTP: /users, /settings, /userdata, /v2/userdata."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import httpx
import pytest

from midrun.server.errors import HTTPError
from midrun.server.userdata import DEFAULT_SETTINGS, SETTINGS_FILE
from tests.server.conftest import LiveServer, make_config, start_server


def user_dir(live: LiveServer, name: str = "default") -> Path:
    return Path(live.server.config.user_dir) / name


def raw_get(live: LiveServer, target: str) -> tuple[int, bytes]:
    """A request whose target is sent byte for byte (httpx would resolve ``..``)."""
    host, port = live.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                     .encode())  # fmt: skip
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


# ---------------------------------------------------------------------------------------------
# /users


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_users_is_single_user(http: httpx.Client, prefix: str) -> None:
    r = http.get(prefix + "/users")
    assert r.status_code == 200
    assert r.json() == {"storage": "server", "migrated": True}
    r = http.post(prefix + "/users", json={"username": "bob"})
    assert r.status_code == 400
    assert "token" in r.json()["error"]


# ---------------------------------------------------------------------------------------------
# /settings


def test_settings_seeded_then_merged(live: LiveServer, http: httpx.Client) -> None:
    settings = http.get("/api/settings").json()
    assert {k: settings[k] for k in DEFAULT_SETTINGS} == DEFAULT_SETTINGS
    stored = user_dir(live) / SETTINGS_FILE
    assert json.loads(stored.read_text())["Comfy.TutorialCompleted"] is True

    r = http.post("/api/settings", json={"Comfy.TutorialCompleted": False, "A.b": [1, 2]})
    assert r.status_code == 200 and r.content == b""
    settings = http.get("/settings").json()
    assert settings["Comfy.TutorialCompleted"] is False  # the user's value wins
    assert settings["A.b"] == [1, 2]
    assert settings["Comfy.Notification.ShowVersionUpdates"] is False  # defaults kept
    assert json.loads(stored.read_text()) == settings
    assert not [p for p in stored.parent.iterdir() if p.name.endswith(".tmp")]


def test_setting_by_id(http: httpx.Client) -> None:
    assert http.post("/api/settings/Comfy.ColorPalette", json="light").status_code == 200
    assert http.get("/api/settings/Comfy.ColorPalette").json() == "light"
    assert http.post("/settings/Obj.x", content=b'{"k": null}').status_code == 200
    assert http.get("/settings/Obj.x").json() == {"k": None}
    r = http.get("/api/settings/No.Such.Setting")
    assert r.status_code == 200 and r.json() is None
    assert http.get("/api/settings").json()["Comfy.ColorPalette"] == "light"


@pytest.mark.parametrize(("path", "body"), [
    ("/api/settings", b"not json"),
    ("/api/settings", b"[1, 2]"),
    ("/api/settings", b""),
    ("/api/settings/Some.id", b"{nope"),
])  # fmt: skip
def test_settings_refuse_bad_bodies(http: httpx.Client, path: str, body: bytes) -> None:
    r = http.post(path, content=body)
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_json"


# ---------------------------------------------------------------------------------------------
# /userdata/{file}


def test_write_read_overwrite(live: LiveServer, http: httpx.Client) -> None:
    r = http.post("/api/userdata/workflows%2Fnew%2Fa.json", content=b'{"nodes": []}')
    assert r.status_code == 200 and r.json() == "workflows/new/a.json"
    assert (user_dir(live) / "workflows/new/a.json").read_bytes() == b'{"nodes": []}'

    r = http.get("/api/userdata/workflows%2Fnew%2Fa.json")
    assert r.status_code == 200 and r.content == b'{"nodes": []}'
    assert r.headers["content-disposition"].startswith("attachment")
    assert r.headers["x-content-type-options"] == "nosniff"

    r = http.post("/userdata/workflows%2Fnew%2Fa.json?overwrite=false", content=b"x")
    assert r.status_code == 409 and r.text == "File already exists"
    # only the literal "false" blocks
    r = http.post("/userdata/workflows%2Fnew%2Fa.json?overwrite=undefined&full_info=true",
                  content=b"12345")  # fmt: skip
    assert r.status_code == 200
    info = r.json()
    assert info["path"] == "workflows/new/a.json" and info["size"] == 5
    assert isinstance(info["modified"], int) and info["modified"] > 1_600_000_000_000
    assert isinstance(info["created"], int)
    assert http.get("/userdata/workflows%2Fnew%2Fa.json").content == b"12345"


def test_missing_file_and_user_css(live: LiveServer, http: httpx.Client) -> None:
    assert http.get("/api/userdata/nothing.json").status_code == 404
    assert http.get("/api/userdata/").status_code == 400
    (user_dir(live) / "user.css").write_text("body {}")
    r = http.get("/api/userdata/user.css")
    assert r.status_code == 200 and r.text == "body {}"
    assert r.headers["content-type"].startswith("text/css")
    assert "attachment" not in r.headers.get("content-disposition", "")


def test_literal_slashes_are_accepted(live: LiveServer, http: httpx.Client) -> None:
    assert http.post("/api/userdata/lit/x.json", content=b"1").json() == "lit/x.json"
    assert http.get("/api/userdata/lit/x.json").content == b"1"


def test_delete(live: LiveServer, http: httpx.Client) -> None:
    http.post("/api/userdata/gone.json", content=b"1")
    r = http.delete("/api/userdata/gone.json")
    assert r.status_code == 204
    assert not (user_dir(live) / "gone.json").exists()
    assert http.delete("/userdata/gone.json").status_code == 404


def test_move(live: LiveServer, http: httpx.Client) -> None:
    http.post("/api/userdata/mv%2Fa.json", content=b"A")
    http.post("/api/userdata/mv%2Fb.json", content=b"B")
    r = http.post("/api/userdata/mv%2Fa.json/move/mv%2Fdeep%2Fc.json?overwrite=false")
    assert r.status_code == 200 and r.json() == "mv/deep/c.json"
    root = user_dir(live)
    assert not (root / "mv/a.json").exists() and (root / "mv/deep/c.json").read_bytes() == b"A"

    r = http.post("/userdata/mv%2Fdeep%2Fc.json/move/mv%2Fb.json?overwrite=false")
    assert r.status_code == 409 and r.text == "File already exists"
    r = http.post("/userdata/mv%2Fdeep%2Fc.json/move/mv%2Fb.json?full_info=true")
    assert r.status_code == 200 and r.json()["path"] == "mv/b.json" and r.json()["size"] == 1
    assert (root / "mv/b.json").read_bytes() == b"A"
    assert http.post("/userdata/mv%2Fnope.json/move/mv%2Fz.json").status_code == 404


# ---------------------------------------------------------------------------------------------
# Listings


@pytest.fixture
def listed(live: LiveServer) -> Path:
    root = user_dir(live) / "listed"
    (root / "sub").mkdir(parents=True, exist_ok=True)
    (root / "a.json").write_text("{}")
    (root / "sub" / "b.json").write_text("[1]")
    (root / ".hidden").write_text("")
    return root


def test_list_userdata(http: httpx.Client, listed: Path) -> None:
    assert http.get("/api/userdata?dir=listed").json() == ["a.json"]
    assert http.get("/api/userdata?dir=listed&recurse=TRUE").json() == ["a.json", "sub/b.json"]
    split = http.get("/userdata?dir=listed&recurse=true&split=true").json()
    assert split == [["a.json", "a.json"], ["sub/b.json", "sub", "b.json"]]
    full = http.get("/userdata?dir=listed&recurse=true&full_info=true&split=true").json()
    assert [(f["path"], f["size"]) for f in full] == [("a.json", 2), ("sub/b.json", 3)]
    assert all(isinstance(f["modified"], int) and isinstance(f["created"], int) for f in full)


def test_list_userdata_errors(http: httpx.Client, listed: Path) -> None:
    r = http.get("/api/userdata")
    assert r.status_code == 400 and r.text == "Directory not provided"
    r = http.get("/api/userdata?dir=no_such_dir")
    assert r.status_code == 404 and r.text == "Directory not found"
    for bad in ("..", "../..", "/etc", "listed/../.."):
        r = http.get("/api/userdata", params={"dir": bad})
        assert (r.status_code, r.text) == (403, "Invalid directory"), bad


def test_list_userdata_v2(http: httpx.Client, listed: Path) -> None:
    entries = http.get("/api/v2/userdata?path=listed").json()
    assert [(e["name"], e["path"], e["type"]) for e in entries] == [
        ("sub", "listed/sub", "directory"),
        (".hidden", "listed/.hidden", "file"),
        ("a.json", "listed/a.json", "file"),
        ("b.json", "listed/sub/b.json", "file"),
    ]
    a = entries[2]
    assert a["size"] == 2 and isinstance(a["modified"], float)
    assert http.get("/v2/userdata?path=missing").json() == []
    assert http.get("/v2/userdata", params={"path": "../.."}).status_code == 403


# ---------------------------------------------------------------------------------------------
# Confinement


@pytest.fixture
def outside(live: LiveServer, tmp_path: Path) -> Path:
    """A folder outside the user directory, linked from inside it as ``link``."""
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "secret.txt").write_text("secret")
    link = user_dir(live) / "link"
    if link.is_symlink():
        link.unlink()
    os.symlink(secret, link)
    return secret


@pytest.mark.parametrize("file", [
    "..%2F..%2Fauth%2Fusers.json",
    "%2e%2e%2f%2e%2e%2fsecret",
    "%2Fetc%2Fpasswd",
    "workflows%2F..%2F..%2Fx",
    "link%2Fsecret.txt",
])  # fmt: skip
def test_reads_stay_inside(http: httpx.Client, outside: Path, file: str) -> None:
    r = http.get(f"/api/userdata/{file}")
    assert r.status_code == 403, r.text
    assert b"secret" not in r.content


def test_nul_and_bad_encoding_refused(http: httpx.Client) -> None:
    assert http.get("/api/userdata/a%00b.json").status_code == 400
    assert http.get("/api/userdata/%ff.json").status_code == 400


def test_literal_dot_segments_refused(live: LiveServer) -> None:
    status, body = raw_get(live, "/api/userdata/../../auth/users.json")
    assert status == 403 and b"users" not in body


def test_writes_stay_inside(live: LiveServer, http: httpx.Client, outside: Path) -> None:
    assert http.post("/api/userdata/link%2Fnew.txt", content=b"x").status_code == 403
    assert not (outside / "new.txt").exists()
    assert http.post("/api/userdata/..%2Fescaped.txt", content=b"x").status_code == 403
    assert not (user_dir(live).parent / "escaped.txt").exists()
    assert http.delete("/api/userdata/link%2Fsecret.txt").status_code == 403
    assert (outside / "secret.txt").exists()
    http.post("/api/userdata/inside.txt", content=b"x")
    r = http.post("/api/userdata/inside.txt/move/link%2Fmoved.txt")
    assert r.status_code == 403 and not (outside / "moved.txt").exists()
    r = http.post("/api/userdata/link%2Fsecret.txt/move/stolen.txt")
    assert r.status_code == 403 and (outside / "secret.txt").exists()
    assert http.get("/api/userdata?dir=link").status_code == 403


def test_listing_skips_links_out(live: LiveServer, http: httpx.Client, outside: Path) -> None:
    names = http.get("/api/userdata?dir=.&recurse=true").json()
    assert not [n for n in names if "secret" in n]
    entries = http.get("/api/v2/userdata").json()
    assert not [e for e in entries if "secret" in e["path"]]


# ---------------------------------------------------------------------------------------------
# With auth: one directory per token user


def test_each_user_has_own_directory(tmp_path: Path) -> None:
    live = start_server(make_config(tmp_path, auth=True, workers=False))
    try:
        token = live.server.users.create("alice")
        for dots in (".", ".."):  # names that would be folders outside the user's own
            with pytest.raises(HTTPError):
                live.server.users.create(dots)
        with live.client(headers={"Authorization": f"Bearer {token}"}) as http:
            assert http.post("/api/settings", json={"X.y": 1}).status_code == 200
            assert http.post("/api/userdata/w%2Fa.json", content=b"A").status_code == 200
        root = Path(live.server.config.user_dir)
        assert json.loads((root / "alice" / SETTINGS_FILE).read_text())["X.y"] == 1
        assert (root / "alice" / "w" / "a.json").read_bytes() == b"A"
        assert not (root / "default").exists()
        assert httpx.get(live.url + "/api/settings").status_code == 401
    finally:
        live.stop()
