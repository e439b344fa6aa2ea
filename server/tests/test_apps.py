"""The workshop's Flask, Pyramid and Django apps, served by wizgy, on every model.

Each app runs wrapped in wsgiref.validate.validator (tests/apps/validated_apps.py)
with apps/ as its working directory, the way the workshop starts it. One server
per (model, app) serves every test below; when it stops, its output must hold
no WSGIWarning and no traceback.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3

import pytest
import requests
from conftest import APPS, AVAILABLE_MODELS, run_wizgy

FRAMEWORKS = ["flask", "pyramid", "django"]
MIB = 1024 * 1024


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def in_pieces(data: bytes, size: int):
    """A generator body: requests sends it with Transfer-Encoding: chunked."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.fixture(
    scope="module",
    params=[(m, f) for m in AVAILABLE_MODELS for f in FRAMEWORKS],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def served(request, tmp_path_factory):
    model, framework = request.param
    database = tmp_path_factory.mktemp("django") / "db.sqlite3"
    env = {"DJANGO_SQLITE_PATH": str(database)}
    with run_wizgy("-k", model, f"validated_apps:{framework}", env=env, cwd=APPS) as server:
        yield framework, server, database
        server.stop()  # flush everything the app and the validator wrote
        output = server.output()
    assert "WSGIWarning" not in output, output
    assert "Traceback" not in output, output


@pytest.fixture
def app(served):
    framework, server, _ = served
    with requests.Session() as session:
        yield framework, server.url, session


def test_hello(app):
    framework, url, session = app
    response = session.get(f"{url}/hello", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.text == f"Hello, World! from {framework.title()}\n"


def test_echo_large_body(app):
    _, url, session = app
    body = os.urandom(5 * MIB)
    response = session.post(f"{url}/echo", data=body, timeout=30)
    assert response.status_code == 200
    assert response.json() == {"length": len(body), "sha256": sha256(body)}


def test_echo_chunked_body(app):
    _, url, session = app
    body = os.urandom(MIB + 123)
    response = session.post(f"{url}/echo", data=in_pieces(body, 100_000), timeout=30)
    assert response.status_code == 200
    assert response.json() == {"length": len(body), "sha256": sha256(body)}


def test_echo_empty_body(app):
    _, url, session = app
    response = session.post(f"{url}/echo", data=b"", timeout=10)
    assert response.json() == {"length": 0, "sha256": sha256(b"")}


def test_stream_has_no_content_length(app):
    _, url, session = app
    response = session.get(f"{url}/stream", params={"n": 1000}, timeout=10)
    assert response.status_code == 200
    assert "Content-Length" not in response.headers
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert response.text == "".join(f"chunk {i}\n" for i in range(1000))


def test_headers_as_the_app_sees_them(app):
    _, url, session = app
    response = session.get(f"{url}/headers", headers={"X-Workshop": "lesson 2"}, timeout=10)
    seen = response.json()
    assert seen["headers"]["X-Workshop"] == "lesson 2"
    assert seen["headers"]["Host"] == url.removeprefix("http://")
    assert seen["remote_addr"] == "127.0.0.1"
    assert seen["scheme"] == "http"


def test_sleep(app):
    framework, url, session = app
    response = session.get(f"{url}/sleep", params={"s": "0.1"}, timeout=10)
    assert response.status_code == 200
    assert response.text == f"Slept 0.1s in {framework.title()}\n"


def test_sleep_rejects_nonsense(app):
    _, url, session = app
    assert session.get(f"{url}/sleep", params={"s": "nan"}, timeout=10).status_code == 400


def test_upload(app):
    _, url, session = app
    data = os.urandom(MIB)
    files = {"file": ("lesson.bin", data, "application/octet-stream")}
    response = session.post(f"{url}/upload", files=files, timeout=30)
    assert response.status_code == 200
    assert response.json() == {"filename": "lesson.bin", "size": MIB, "sha256": sha256(data)}


def test_static_file(app):
    _, url, session = app
    response = session.get(f"{url}/static/hello.txt", timeout=10)
    assert response.status_code == 200
    assert response.content == (APPS / "static" / "hello.txt").read_bytes()


def test_unknown_route_is_404(app):
    _, url, session = app
    assert session.get(f"{url}/nowhere", timeout=10).status_code == 404


def test_django_migrated_its_database_on_start(served):
    framework, _, database = served
    if framework != "django":
        return
    with contextlib.closing(sqlite3.connect(database)) as db:
        (applied,) = db.execute("SELECT count(*) FROM django_migrations").fetchone()
        (users,) = db.execute("SELECT count(*) FROM auth_user").fetchone()
    assert applied > 0
    assert users == 0


def test_django_admin_login(app):
    framework, url, session = app
    response = session.get(f"{url}/admin/login/", timeout=10)
    if framework != "django":  # only Django ships an admin
        assert response.status_code == 404
        return
    assert response.status_code == 200
    assert "csrfmiddlewaretoken" in response.text
    css = session.get(f"{url}/static/admin/css/base.css", timeout=10)
    assert css.status_code == 200


def test_chunked_upload(app):
    # A multipart form sent chunked: no Content-Length. Django reads forms only by
    # CONTENT_LENGTH, so a chunked body is read whole before the app runs, in every
    # model, and its length told (as waitress does): every framework gets the file.
    framework, url, session = app
    data = os.urandom(MIB)
    body, content_type = requests.models.RequestEncodingMixin._encode_files(
        {"file": ("lesson.bin", data, "application/octet-stream")}, {})
    response = session.post(f"{url}/upload", data=in_pieces(body, 100_000),
                            headers={"Content-Type": content_type}, timeout=30)
    assert response.status_code == 200, response.text[:300]
    assert response.json() == {"filename": "lesson.bin", "size": MIB, "sha256": sha256(data)}
