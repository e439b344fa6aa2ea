"""The labs' small servers (server/labs/part1, part2), over real sockets.

Part 1's socket server answers a request and shows the bytes it read. Part 2's WSGI
server runs the workshop's Flask, Pyramid and Django apps (wrapped in
wsgiref.validate.validator) unchanged: test_apps.py's route tests, imported here, run
against it. Then each request that server/labs/part2-to-wizgy.md says breaks the short
server is sent to it and to wizgy, and both answers are checked: the page's claims
are tests. Both servers run on CPython and, where installed, on PyPy 3.9.
"""

from __future__ import annotations

import shutil
import socket
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import (
    APPS,
    SERVER,
    connect,
    exchange,
    read_until_close,
    run_server,
    run_wizgy,
    skip_or_fail,
    wait_for,
)

# The route tests of test_apps.py, collected again here with this module's `served`.
from test_apps import (  # noqa: F401
    app,
    test_django_admin_login,
    test_django_migrated_its_database_on_start,
    test_echo_empty_body,
    test_echo_large_body,
    test_headers_as_the_app_sees_them,
    test_hello,
    test_sleep,
    test_sleep_rejects_nonsense,
    test_static_file,
    test_unknown_route_is_404,
    test_upload,
)

LABS = SERVER / "labs"
PART1 = LABS / "part1" / "webserver1.py"
PART2 = LABS / "part2" / "webserver2.py"
FRAMEWORKS = ["flask", "pyramid", "django"]


def interpreter(name: str) -> str:
    if name == "python":
        return sys.executable
    path = shutil.which(name)
    if path is None:
        skip_or_fail(f"needs {name} (apt-get install {name})")
    return path


def run_part1(python: str = sys.executable):
    return run_server([python, str(PART1), "-b", "127.0.0.1:0"])


def run_part2(app_name: str, python: str = sys.executable, env: dict | None = None, cwd=None):
    return run_server([python, str(PART2), "-b", "127.0.0.1:0", app_name], env=env, cwd=cwd)


def statuses(raw: bytes) -> list[int]:
    """The status codes of every response in a byte stream (pipelined answers)."""
    return [int(line.split()[1]) for line in raw.split(b"\r\n") if line.startswith(b"HTTP/1.")]


# --- part 1 ------------------------------------------------------------------------


@pytest.mark.parametrize("python", ["python", "pypy3"])
def test_part1_answers_and_prints_the_bytes_it_read(python):
    with run_part1(interpreter(python)) as server:
        raw = exchange(server.port, b"GET /hello HTTP/1.1\r\nHost: lab\r\n\r\n")
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Content-Length: %d" % len(body) in head
        assert body == b"Hello, World!\nYou sent: GET /hello HTTP/1.1\n"
        # What an attendee watches: each recv() and its bytes, as Python writes them.
        server.wait_for_output(r"recv\(\) -> 34 bytes: b'GET /hello HTTP/1.1\\r\\nHost: lab")


def test_part1_takes_a_head_in_pieces_and_bare_lf_lines():
    """A telnet session sends a line per Enter; `nc` without -C ends lines with LF."""
    with run_part1() as server, connect(server.port) as sock:
        for piece in (b"GET /typed HTTP/1.1\n", b"Host: lab\n", b"\n"):
            sock.sendall(piece)
            time.sleep(0.05)  # separate recv()s, as typing gives
        assert read_until_close(sock).endswith(b"You sent: GET /typed HTTP/1.1\n")
        assert server.output().count("recv() ->") >= 2


def test_part1_with_an_http_client_and_a_client_that_leaves():
    with run_part1() as server:
        with connect(server.port) as sock:  # connects and leaves without a word
            sock.sendall(b"GET /half")
        response = requests.get(f"{server.url}/hello?x=1", timeout=10)
        assert response.status_code == 200
        assert response.text.endswith("You sent: GET /hello?x=1 HTTP/1.1\n")


# --- part 2: the apps, unchanged ------------------------------------------------------


@pytest.fixture(scope="module", params=FRAMEWORKS)
def served(request, tmp_path_factory):
    """test_apps.py's fixture, with part 2's server instead of wizgy."""
    framework = request.param
    database = tmp_path_factory.mktemp("django") / "db.sqlite3"
    env = {"DJANGO_SQLITE_PATH": str(database)}
    with run_part2(f"validated_apps:{framework}", env=env, cwd=APPS) as server:
        yield framework, server, database
        server.stop()
        output = server.output()
    assert "WSGIWarning" not in output, output
    assert "Traceback" not in output, output


def test_stream_is_ended_by_closing_the_connection(app):  # noqa: F811 (the fixture)
    """No Content-Length and no chunked coding: the end of the body is the close."""
    _, url, session = app
    response = session.get(f"{url}/stream", params={"n": 1000}, timeout=10)
    assert response.status_code == 200
    assert "Content-Length" not in response.headers
    assert "Transfer-Encoding" not in response.headers
    assert response.headers["Connection"] == "close"
    assert response.text == "".join(f"chunk {i}\n" for i in range(1000))


# --- part 2: the WSGI contract, on CPython and PyPy ---------------------------------


@pytest.fixture(scope="module", params=["python", "pypy3"])
def testapp(request, tmp_path_factory):
    close_log = tmp_path_factory.mktemp("close") / "close.log"
    with run_part2(
        "testapp:app", interpreter(request.param), env={"TESTAPP_CLOSE_LOG": str(close_log)}
    ) as server:
        yield server, close_log


def test_part2_write_then_the_iterable(testapp):
    server, _ = testapp
    assert requests.get(f"{server.url}/write", timeout=10).text == "written and returned\n"


def test_part2_calls_close_once(testapp):
    server, close_log = testapp
    response = requests.get(f"{server.url}/stream", params={"n": 3}, timeout=10)
    assert response.text == "chunk 0\nchunk 1\nchunk 2\n"
    assert close_log.read_text().splitlines().count("stream") == 1


def test_part2_environ(testapp):
    server, _ = testapp
    response = requests.get(
        f"{server.url}/environ/a%20b", params={"q": "1"}, headers={"X-Twice": "a"}, timeout=10
    )
    environ = response.json()
    assert environ["PATH_INFO"] == "/environ/a b"
    assert environ["QUERY_STRING"] == "q=1"
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert environ["HTTP_X_TWICE"] == "a"
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["SERVER_PORT"] == str(server.port)


def test_part2_body_and_exc_info(testapp):
    server, _ = testapp
    echo = requests.post(f"{server.url}/echo", data=b"x" * 100_000, timeout=10).json()
    assert (echo["length"], echo["content_length"]) == (100_000, "100000")
    # start_response called again with exc_info before anything was sent: it replaces.
    replaced = requests.get(f"{server.url}/exc-info", timeout=10)
    assert (replaced.status_code, replaced.text) == (500, "replaced\n")


def test_part2_app_error_is_500_and_the_server_goes_on(testapp):
    server, _ = testapp
    assert requests.get(f"{server.url}/error", timeout=10).status_code == 500
    assert "RuntimeError: boom before start_response" in server.output()
    assert requests.get(f"{server.url}/hello", timeout=10).text == "Hello, World!\n"


# --- part 2 against wizgy: what server/labs/part2-to-wizgy.md shows --------------------


@pytest.fixture(scope="module")
def short():
    with run_part2("testapp:app") as server:
        yield server


@pytest.fixture(scope="module")
def wizgy():
    with run_wizgy("testapp:app") as server:
        yield server


HELLO = b"GET /hello HTTP/1.1\r\nHost: lab\r\n\r\n"


def test_keep_alive_pipelined_requests(short, wizgy):
    """Two requests in one send: the short server answers the first and closes."""
    assert statuses(exchange(short.port, HELLO * 2)) == [200]
    last = HELLO.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    assert statuses(exchange(wizgy.port, HELLO + last)) == [200, 200]


def test_framing_chunked_request_body(short, wizgy):
    """A chunked upload (curl -T -, a generator body): the short server loses the body."""
    raw = (
        b"POST /echo HTTP/1.1\r\nHost: lab\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    assert b'"length": 0' in exchange(short.port, raw)
    assert b'"length": 5' in exchange(wizgy.port, raw)


def test_framing_a_response_cut_short(short, wizgy):
    """The app fails mid-body: a close-delimited body looks complete, a chunked one does not."""
    url = "/error-mid-stream"
    response = requests.get(f"{short.url}{url}", timeout=10)
    assert (response.status_code, response.content) == (200, b"a" * 10 + b"b" * 10)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(f"{wizgy.url}{url}", timeout=10).content


def test_limits_an_idle_connection_holds_the_short_server(short, wizgy):
    """`nc host port` and nothing typed: the short server waits on it, everyone waits."""
    for server, answered in ((short, False), (wizgy, True)):
        with connect(server.port) as idle, connect(server.port) as other:
            idle.sendall(b"GET /hello HTTP/1.1\r\n")  # and no more
            other.sendall(HELLO)
            other.settimeout(1.0)
            try:
                got = other.recv(65536)
            except socket.timeout:
                got = b""
            assert got.startswith(b"HTTP/1.1 200") is answered, server.url
            idle.sendall(b"Host: lab\r\nConnection: close\r\n\r\n")  # now `other` goes on
            assert read_until_close(idle).startswith(b"HTTP/1.1 200")
            if not answered:
                assert statuses(read_until_close(other)) == [200]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_limits_a_header_without_end(short, wizgy):
    """A 32 MiB header field: the short server holds it all; wizgy refuses past 8190 bytes (431)."""
    before = rss_kib(short.pid)
    field = b"GET /hello HTTP/1.1\r\nHost: lab\r\nX-Big: " + b"a" * (32 * 1024 * 1024)
    with connect(short.port, timeout=30) as sock:
        sock.sendall(field)
        wait_for(
            lambda: rss_kib(short.pid) - before > 16 * 1024,
            timeout=30,
            what="the short server to hold the field in memory",
        )
        sock.sendall(b"\r\n\r\n")
        assert statuses(read_until_close(sock, timeout=30)) == [200]
    with connect(wizgy.port) as sock:
        sock.sendall(field[:65536] + b"\r\n\r\n")  # 64 KiB is plenty to be refused
        assert statuses(read_until_close(sock)) == [431]


STRICTNESS = {
    # name: (request, the short server's status or None for "closed, no answer", wizgy's)
    "content-length-and-chunked": (
        b"POST /echo HTTP/1.1\r\nHost: lab\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        200,
        400,
    ),
    # The short server reads the last one's 5 bytes and hands the app "0,5": a 500 from
    # the app (here its validator) after the body was taken, not a 400 before.
    "two-content-lengths": (
        b"POST /echo HTTP/1.1\r\nHost: lab\r\nContent-Length: 0\r\nContent-Length: 5\r\n"
        b"\r\nhello",
        500,
        400,
    ),
    "no-host": (b"GET /hello HTTP/1.1\r\n\r\n", 200, 400),
    "space-before-colon": (b"GET /hello HTTP/1.1\r\nHost : lab\r\n\r\n", 200, 400),
    "unknown-version": (b"GET /hello HTTP/9.9\r\nHost: lab\r\n\r\n", 200, 505),
    "content-length-not-a-number": (
        b"POST /echo HTTP/1.1\r\nHost: lab\r\nContent-Length: abc\r\n\r\n",
        None,
        400,
    ),
}


@pytest.mark.parametrize("name", STRICTNESS)
def test_strictness(name, short, wizgy):
    raw, short_status, wizgy_status = STRICTNESS[name]
    assert statuses(exchange(short.port, raw)) == ([short_status] if short_status else [])
    assert statuses(exchange(wizgy.port, raw)) == [wizgy_status]
    assert requests.get(f"{short.url}/hello", timeout=10).status_code == 200  # still up
