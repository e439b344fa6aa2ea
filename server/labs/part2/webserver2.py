"""Lab part 2: a WSGI server (PEP 3333) that runs Flask, Pyramid and Django unchanged.

    cd apps && python3 ../server/labs/part2/webserver2.py flaskapp:app
    python3 webserver2.py -b 0.0.0.0:8000 djangoapp:app      # the stack: make lesson-part2

One connection at a time and one request per connection: read the head, read
Content-Length bytes of body, build the environ, call the app, send what it
returns, close. No keep-alive, no chunked request bodies, no limits, no checks:
server/labs/part2-to-wizgy.md shows the request that breaks each, and what
wizgy does instead.
"""

import argparse
import importlib
import io
import socket
import sys
import traceback
from email.utils import formatdate
from urllib.parse import unquote


def read_request(sock: socket.socket):
    """The request line and [(name, value)] as latin-1 text, and the body as bytes.

    None if the client closed before the end of a head.
    """
    data, end = bytearray(), -1
    while end < 0:  # the blank line that ends the head; no limit on how long it takes
        piece = sock.recv(65536)
        if not piece:
            return None
        data += piece
        end = data.find(b"\r\n\r\n", max(0, len(data) - len(piece) - 3))  # only the new bytes
    head, body = bytes(data[:end]), data[end + 4 :]
    request_line, *lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines:
        name, _, value = line.partition(":")
        headers.append((name, value.strip()))
    length = int(dict((n.lower(), v) for n, v in headers).get("content-length") or 0)
    while len(body) < length:  # the body: exactly Content-Length bytes, all in memory
        piece = sock.recv(65536)
        if not piece:
            break
        body += piece
    return request_line, headers, bytes(body[:length])


class WSGIServer:
    def __init__(self, listener: socket.socket, app) -> None:
        self.listener = listener
        self.app = app
        self.server_name, self.server_port = listener.getsockname()[:2]

    def serve_forever(self) -> None:
        while True:
            sock, peer = self.listener.accept()
            with sock:  # one request, then close: the client sees the end of the body
                try:
                    self.handle_one_request(sock, peer)
                except OSError as error:  # the client left; serve the next one
                    print(f"{peer[0]}:{peer[1]}: {error}", file=sys.stderr)
                except Exception:  # a head it cannot use (Content-Length: abc): drop it
                    traceback.print_exc()

    def handle_one_request(self, sock: socket.socket, peer) -> None:
        request = read_request(sock)
        if request is None:
            return
        request_line, headers, body = request
        try:
            method, target, version = request_line.split(" ")
        except ValueError:
            sock.sendall(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
            return
        print(f"{peer[0]} {request_line}", file=sys.stderr)
        environ = self.make_environ(method, target, version, headers, body, peer)
        Response(sock, self.app, environ).run()

    def make_environ(self, method, target, version, headers, body, peer) -> dict:
        path, _, query = target.partition("?")
        environ = {
            # CGI's variables (PEP 3333, "environ Variables"): native strings.
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path, "latin-1"),  # %2F and all: decoded, as CGI does
            "QUERY_STRING": query,
            "SERVER_NAME": self.server_name,
            "SERVER_PORT": str(self.server_port),
            "SERVER_PROTOCOL": version,
            "REMOTE_ADDR": peer[0],
            "REMOTE_PORT": str(peer[1]),
            # WSGI's own.
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in headers:
            key = name.upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = "HTTP_" + key
            # A field sent twice is one value, comma-separated (RFC 9110 section 5.3).
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ


class Response:
    """One call of the app: start_response(), write(), the iterable and its close()."""

    def __init__(self, sock: socket.socket, app, environ: dict) -> None:
        self.sock, self.app, self.environ = sock, app, environ
        self.status = self.headers = None
        self.headers_sent = False

    def start_response(self, status: str, headers: list, exc_info=None):
        if exc_info and self.headers_sent:
            raise exc_info[1].with_traceback(exc_info[2])  # too late to change: give up
        self.status, self.headers = status, headers
        return self.write  # the old imperative API: body bytes sent at once

    def write(self, data: bytes) -> None:
        if not self.headers_sent:
            self.send_head()
        self.sock.sendall(data)

    def send_head(self) -> None:
        lines = [
            f"HTTP/1.1 {self.status}",
            f"Date: {formatdate(usegmt=True)}",
            "Server: webserver2",
            "Connection: close",
        ]
        lines += [f"{name}: {value}" for name, value in self.headers]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.headers_sent = True

    def run(self) -> None:
        try:
            result = self.app(self.environ, self.start_response)
        except Exception:
            self.fail()
            return
        try:
            for data in result:
                if data:  # PEP 3333: the head waits for the first non-empty piece
                    self.write(data)
            if not self.headers_sent:
                self.write(b"")
        except OSError:
            raise  # the client went away
        except Exception:
            self.fail()
        finally:
            if hasattr(result, "close"):
                result.close()

    def fail(self) -> None:
        traceback.print_exc()
        if not self.headers_sent:  # else all we can do is close the connection early
            self.status = "500 Internal Server Error"
            self.headers = [("Content-Type", "text/plain")]
            self.write(b"Internal Server Error\n")


def load_app(name: str):
    module, _, attribute = name.partition(":")
    return getattr(importlib.import_module(module), attribute or "app")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-b", "--bind", default="127.0.0.1:8000", help="HOST:PORT")
    parser.add_argument("app", help="MODULE:CALLABLE, e.g. flaskapp:app")
    args = parser.parse_args()
    sys.path.insert(0, ".")  # the app's module, from where the server is started
    app = load_app(args.app)  # before listening: a client never waits on an import
    host, _, port = args.bind.rpartition(":")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, int(port)))
    listener.listen(5)
    print("Listening at: http://%s:%d" % listener.getsockname()[:2], file=sys.stderr, flush=True)
    WSGIServer(listener, app).serve_forever()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
