"""`pig serve` as a person uses it: a real server process on a free local port, queried over HTTP (text queries,
uploads, range requests, path-traversal refusals) and its page loaded in a real headless Chromium.

One server (module fixture) over an index of four small synthetic videos, built with a tiny random model.
"""

import http.client
import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

import pytest
from helpers import COLOURS, make_library, pig_command

SECRET = "top secret, not a video"


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """`make_library` (model, videos with a broken one, index), and a secret file beside the videos."""
    root = make_library(tmp_path_factory.mktemp("serve"))
    (root / "secret.txt").write_text(SECRET)
    return root


def serve_command() -> list[str]:
    return pig_command() + ["serve"]


@pytest.fixture(scope="module")
def server(library):
    """`pig serve INDEX --port 0` in a subprocess; yields its base URL; checks a clean shutdown and no traceback."""
    tmp = library / "tmp"
    tmp.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TMPDIR": str(tmp)}
    log = (library / "server.log").open("w")
    process = subprocess.Popen(serve_command() + [library / "index", "--port", "0", "--max_upload_mb", "1",
                                                  "--device", "cpu"],
                               stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=library)
    line = process.stdout.readline()  # printed once the model and the index are loaded and the port is bound
    if not line.startswith("serving"):
        process.kill()
        pytest.fail(f"pig serve did not start: {line!r}\n{(library / 'server.log').read_text()}")
    url = line.split(" on ", 1)[1].strip().rstrip("/")
    assert url.startswith("http://127.0.0.1:")  # local only unless told otherwise
    yield url
    process.terminate()
    # uvicorn shuts down gracefully, then re-raises the signal it caught: `pig` exits with 128 + SIGTERM
    assert process.wait(timeout=30) == 128 + signal.SIGTERM
    log.close()
    assert "Traceback" not in (library / "server.log").read_text()


def get(url: str, path: str, headers=None) -> tuple[int, dict, bytes]:
    """A GET whose path is sent exactly as written (no client-side normalisation of `..` or escapes)."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def get_json(url: str, path: str):
    status, _, body = get(url, path)
    return status, json.loads(body)


def post_file(url: str, path: Path | None, k=None, content: bytes | None = None, name: str | None = None):
    import httpx

    files = {"file": (name or path.name, content if content is not None else path.read_bytes())}
    data = {"k": str(k)} if k is not None else {}
    reply = httpx.post(url + "/api/search", files=files, data=data, timeout=60)
    assert "Traceback" not in reply.text
    if reply.status_code == 413:  # Starlette's body limit answers before the app, in plain text
        return reply.status_code, reply.text
    return reply.status_code, reply.json()


def upload_folders(library: Path) -> list[Path]:
    return list((library / "tmp").glob("pig-serve-uploads-*"))


def test_healthz_and_text_search_match_the_library(server, library):
    from modeling_pig import VideoIndex

    status, health = get_json(server, "/healthz")
    assert status == 200 and health["status"] == "ok" and health["videos"] == 4
    status, body = get_json(server, "/api/search?q=" + quote("a red square") + "&k=3")
    assert status == 200 and body["query"] == "a red square" and body["took_ms"] >= 0
    expected = VideoIndex.load(library / "index").search("a red square", k=3)[0]
    assert [r["path"] for r in body["results"]] == [path for path, _ in expected]
    assert [r["score"] for r in body["results"]] == pytest.approx([s for _, s in expected], abs=1e-4)
    assert [r["url"] for r in body["results"]] == [
        "/media/" + quote(os.path.relpath(p, library / "videos")) for p, _ in expected]


def test_repeated_text_query_hits_the_cache(server):
    _, before = get_json(server, "/healthz")
    first = get_json(server, "/api/search?q=blue+water&k=2")[1]
    again = get_json(server, "/api/search?q=blue+water&k=2")[1]
    _, after = get_json(server, "/healthz")
    assert again["results"] == first["results"]
    assert after["text_cache"]["hits"] == before["text_cache"]["hits"] + 1
    assert after["text_cache"]["misses"] == before["text_cache"]["misses"] + 1


def test_query_by_example_video_finds_itself_and_image_works(server, library):
    status, body = post_file(server, library / "videos" / "green.mp4", k=2)
    assert status == 200, body
    assert body["query"] == "green.mp4" and body["query_type"] == "video" and len(body["results"]) == 2
    assert body["results"][0]["path"] == str(library / "videos" / "green.mp4")
    assert body["results"][0]["score"] == pytest.approx(1.0, abs=2e-3)  # fp16 store

    from PIL import Image

    image = library / "red.png"
    Image.new("RGB", (64, 48), COLOURS["red.mp4"]).save(image)
    status, body = post_file(server, image)
    assert status == 200 and body["query_type"] == "image" and len(body["results"]) == 4
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    # uploads are deleted after use
    (folder,) = upload_folders(library)
    assert list(folder.iterdir()) == []


def test_bad_uploads_get_one_clear_error(server, library):
    status, body = post_file(server, None, content=b"not an image, not a video" * 20, name="notes.txt")
    assert status == 400 and body == {"error": "notes.txt: neither a readable image nor a readable video"}
    status, body = post_file(server, None, content=b"", name="empty.mp4")
    assert status == 400 and "empty" in body["error"]
    status, body = post_file(server, None, content=b"\x00" * (2 * 2**20), name="huge.mp4")  # limit: 1 MB
    assert status == 413 and body == "Content Too Large"
    # the same without a Content-Length header (chunked): the limit is enforced while the body is read
    host, port = server.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    head = b'--x\r\nContent-Disposition: form-data; name="file"; filename="huge.mp4"\r\n\r\n'
    connection.request("POST", "/api/search", body=iter([head] + [b"\x00" * 2**16] * 32 + [b"\r\n--x--\r\n"]),
                       encode_chunked=True, headers={"Content-Type": "multipart/form-data; boundary=x"})
    reply = connection.getresponse()
    assert reply.status == 413 and b"Traceback" not in reply.read()
    connection.close()
    status, body = post_file(server, library / "videos" / "red.mp4", k=1000)
    assert status == 400 and "k must be" in body["error"]
    (folder,) = upload_folders(library)
    assert list(folder.iterdir()) == []


def test_bad_text_queries_get_json_errors_without_traceback(server):
    for path, code, words in [("/api/search?q=", 400, "non-empty"), ("/api/search?q=%20%20", 400, "non-empty"),
                              ("/api/search?q=" + "a" * 1001, 413, "at most 1000"),
                              ("/api/search?q=cat&k=0", 400, "k must be"), ("/api/search?q=cat&k=x", 400, "k must"),
                              ("/nowhere", 404, "not found")]:
        status, headers, body = get(server, path)
        assert status == code, path
        assert headers["content-type"] == "application/json" and words.lower() in body.decode().lower(), body
        assert b"Traceback" not in body


def test_previews_answer_range_requests(server, library):
    data = (library / "videos" / "nested" / "blue.mp4").read_bytes()
    status, headers, body = get(server, "/media/nested/blue.mp4")
    assert status == 200 and body == data and headers["accept-ranges"] == "bytes"
    assert headers["content-type"] == "video/mp4"
    status, headers, body = get(server, "/media/nested/blue.mp4", {"Range": "bytes=100-199"})
    assert status == 206 and body == data[100:200]
    assert headers["content-range"] == f"bytes 100-199/{len(data)}"
    status, headers, body = get(server, "/media/nested/blue.mp4", {"Range": "bytes=-50"})
    assert status == 206 and body == data[-50:]
    status, _, _ = get(server, "/media/nested/blue.mp4", {"Range": f"bytes={len(data) + 10}-"})
    assert status == 416


def test_preview_route_serves_only_indexed_files(server, library):
    videos = library / "videos"
    (videos / "later.mp4").write_bytes((videos / "red.mp4").read_bytes())  # added after indexing
    os.symlink(library / "secret.txt", videos / "link.mp4")  # a symlink trick inside the library
    refused = ["/media/../secret.txt", "/media/nested/../../secret.txt", "/media/%2e%2e/secret.txt",
               "/media/%2E%2E%2Fsecret.txt", "/media/..%2fsecret.txt", "/media/%252e%252e/secret.txt",
               "/media/nested/..%5c..%5csecret.txt", "/media/" + quote(str(library / "secret.txt")),
               "/media//" + str(library / "secret.txt"), "/media/broken.mp4", "/media/later.mp4",
               "/media/link.mp4", "/media/", "/media/nested", "/media/red.mp4%00.txt", "/media/RED.MP4"]
    for path in refused:
        status, _, body = get(server, path)
        assert status == 404 and SECRET.encode() not in body, path
    # an indexed video replaced by a symlink after the server loaded: its real path changed, so 404
    (videos / "swap.mp4").unlink()
    os.symlink(library / "secret.txt", videos / "swap.mp4")
    status, _, body = get(server, "/media/swap.mp4")
    assert status == 404 and SECRET.encode() not in body
    assert get(server, "/media/red.mp4")[0] == 200


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_page_with_query_in_url_renders_results_in_headless_chromium(server):
    browser = chromium()
    if browser is None:
        pytest.skip("no chromium on this machine (.ci/run installs Debian's chromium package)")
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=3000", "--dump-dom",
             server + "/?q=" + quote("a green field") + "&k=3"],
            capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert dom.count('<li class="result"') == 3
    assert dom.count("<video") == 3 and 'src="/media/' in dom
    assert 'value="a green field"' in dom
    assert 'data-ready="1"' in dom  # the page script ran to its end without an error


def test_serve_refuses_a_missing_index_folder_and_a_busy_port(tmp_path, capsys, server, library):
    from modeling_pig.cli import main

    assert main(["serve", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: {tmp_path / 'nowhere'}: no such index folder"]
    port = server.rsplit(":", 1)[1]
    assert main(["serve", str(library / "index"), "--port", port, "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot listen on 127.0.0.1:{port}")


def test_space_app_serves_an_index_whose_videos_moved(library, tmp_path):
    import importlib.util

    from fastapi.testclient import TestClient

    spec = importlib.util.spec_from_file_location("space_app", Path(__file__).resolve().parents[1] / "app.py")
    space = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(space)
    assert space.settings({})["host"] == "127.0.0.1" and space.settings({})["port"] == 7860
    assert space.settings({"SPACE_ID": "user/space"})["host"] == "0.0.0.0"  # what a Space needs

    moved = tmp_path / "space_videos"
    shutil.copytree(library / "videos", moved)
    client = TestClient(space.asgi_app({"PIG_INDEX": str(library / "index"), "PIG_VIDEOS": str(moved)}))
    assert client.get("/healthz").json()["videos"] == 4
    results = client.get("/api/search", params={"q": "a red square", "k": 4}).json()["results"]
    assert {r["path"] for r in results} == {str(moved / name) for name in COLOURS}
    reply = client.get("/media/nested/blue.mp4", headers={"Range": "bytes=0-9"})
    assert reply.status_code == 206 and reply.content == (moved / "nested" / "blue.mp4").read_bytes()[:10]
