"""The pure-Python floor: the least work any Python WSGI server does per request.

`python floor.py HOST:PORT WORKERS module:callable` (from the app's folder).

Not a server, a measure. One epoll loop per process: recv() what is there, find each
request's end (CRLFCRLF), call the app with a copy of one environ built from the
connection's first request line, join the body and send it with a Content-Length
(a server must send each block of a streamed body as it comes: PEP 3333).
It parses no header, reads no body, checks nothing, has no timeouts and no error
handling. What it skips is what a real server must do (RFC 9112 parsing, framing,
limits, PEP 3333 checks, logging); what it keeps no Python server can skip: a recv()
and a send() per request, a dict for the environ, the app call. A Python server can
come close to this line, not pass it; a server that passes it does its loop in C or
Rust (granian, bjoern, meinheld). The harness runs it beside the others so that
every table says where that line is on this machine, today.
"""

from __future__ import annotations

import io
import select
import socket
import sys

from peers import fork_workers, load


def build_environ(head: bytes, host: str, port: str) -> dict:
    method, target, version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
    path, _, query = target.partition("?")
    return {
        "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path,
        "QUERY_STRING": query, "SERVER_NAME": host, "SERVER_PORT": port,
        "SERVER_PROTOCOL": version, "HTTP_HOST": f"{host}:{port}",
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr, "wsgi.multithread": False, "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }  # fmt: skip


def respond(app, environ: dict, extra: bytes = b"") -> bytes:
    started = []

    def start_response(status, headers, exc_info=None):
        started[:] = status, headers

    result = app(environ.copy(), start_response)
    try:
        body = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    status, headers = started
    head = "".join([f"{name}: {value}\r\n" for name, value in headers
                    if name.lower() != "content-length"])  # fmt: skip
    head = f"HTTP/1.1 {status}\r\n{head}Content-Length: {len(body)}\r\n".encode("latin-1")
    return head + extra + b"\r\n" + body


def serve(listener: socket.socket, app, host: str, port: str) -> None:
    poller = select.epoll()
    listening = listener.fileno()
    poller.register(listening, select.EPOLLIN)
    conns: dict[int, list] = {}  # fd -> [socket, bytes of an unfinished head, environ]
    while True:
        for fd, _ in poller.poll():
            if fd == listening:
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    continue
                sock.setblocking(False)
                conns[sock.fileno()] = [sock, b"", None]
                poller.register(sock.fileno(), select.EPOLLIN)
                continue
            conn = conns[fd]
            sock = conn[0]
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            buf = conn[1] + data if conn[1] else data
            out, close = [], not data
            while (end := buf.find(b"\r\n\r\n")) >= 0:
                head, buf = buf[:end], buf[end + 4 :]
                if conn[2] is None:
                    conn[2] = build_environ(head, host, port)
                if b"close" in head:  # Connection: close (hello-close)
                    out.append(respond(app, conn[2], b"Connection: close\r\n"))
                    close = True
                    break
                out.append(respond(app, conn[2]))
            conn[1] = buf
            if out:
                close = send(sock, b"".join(out)) or close
            if close:
                poller.unregister(fd)
                del conns[fd]
                sock.close()


def send(sock: socket.socket, data: bytes) -> bool:
    """Send it all; True if the peer has gone."""
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    except OSError:
        return True
    if sent < len(data):  # rare: the client reads slowly; wait for it
        sock.setblocking(True)
        try:
            sock.sendall(data[sent:])
        except OSError:
            return True
        finally:
            sock.setblocking(False)
    return False


def main() -> None:
    address, workers, spec = sys.argv[1:4]
    host, _, port = address.rpartition(":")
    app = load(spec)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, int(port)))
    listener.listen(1024)
    listener.setblocking(False)
    fork_workers(int(workers))
    print(f"floor: Listening at: http://{address} ({workers} worker(s))", flush=True)
    serve(listener, app, host, port)


if __name__ == "__main__":
    main()
