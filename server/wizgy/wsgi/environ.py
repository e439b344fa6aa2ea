"""The WSGI environ of a request (PEP 3333, "environ Variables")."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from ..http import SERVER_SOFTWARE, Request
from .input import FileWrapper


class ServerInfo:
    """What the environ needs to know about the server and this connection."""

    __slots__ = (
        "server_name", "server_port", "remote_addr", "remote_port", "url_scheme",
        "root_path", "multithread", "multiprocess", "errors", "trust_proxy", "base",
    )

    def __init__(self, *, server_name, server_port, remote_addr, remote_port, url_scheme,
                 root_path, multithread, multiprocess, errors, trust_proxy) -> None:
        self.server_name = server_name
        self.server_port = server_port
        self.remote_addr = remote_addr
        self.remote_port = remote_port
        self.url_scheme = url_scheme
        self.root_path = root_path
        self.multithread = multithread
        self.multiprocess = multiprocess
        self.errors = errors
        self.trust_proxy = trust_proxy
        # What every environ of this connection starts from (build_environ copies it)
        self.base = {
            "SCRIPT_NAME": root_path,
            "SERVER_NAME": server_name,
            "SERVER_PORT": server_port,
            "SERVER_SOFTWARE": SERVER_SOFTWARE,
            "REMOTE_ADDR": remote_addr,
            "REMOTE_PORT": remote_port,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": url_scheme,
            "wsgi.errors": errors,
            "wsgi.multithread": multithread,
            "wsgi.multiprocess": multiprocess,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
        }


_environ_keys: dict[str, str] = {}  # header name as sent -> its HTTP_* environ key
# Host as sent -> (SERVER_NAME, SERVER_PORT or None: the connection's port). A client
# sends the same Host on every request: split once, not per request.
_server_names: dict[str, tuple[str, str | None]] = {}
CACHE_MAX = 4096  # entries in each of these caches, so odd values cannot grow them


def build_environ(req: Request, wsgi_input, info: ServerInfo) -> dict:
    # PATH_INFO is the percent-decoded path, bytes carried in a latin-1 str (PEP 3333
    # "Unicode Issues"); SCRIPT_NAME is the mount point set by --root-path.
    path = unquote_to_bytes(req.path).decode("latin-1") if "%" in req.path else req.path
    script_name = info.root_path
    if script_name and (path == script_name or path.startswith(script_name + "/")):
        path = path[len(script_name):]
    environ = info.base.copy()  # SCRIPT_NAME, SERVER_*, REMOTE_*, wsgi.*
    environ["REQUEST_METHOD"] = req.method
    environ["PATH_INFO"] = path
    environ["QUERY_STRING"] = req.query
    environ["RAW_URI"] = req.target
    environ["SERVER_PROTOCOL"] = req.version
    environ["wsgi.input"] = wsgi_input
    for name, value in req.headers:
        key = _environ_keys.get(name)
        if key is None:
            if "_" in name:
                continue  # X-Forwarded_For would otherwise collide with X-Forwarded-For
            key = "HTTP_" + name.upper().replace("-", "_")
            if len(_environ_keys) < CACHE_MAX:
                _environ_keys[name] = key
        if key == "HTTP_CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
        elif key == "HTTP_CONTENT_LENGTH":
            environ["CONTENT_LENGTH"] = value
        elif key in environ:
            environ[key] += ("; " if key == "HTTP_COOKIE" else ", ") + value
        else:
            environ[key] = value
    host = req.host
    if host is not None:
        environ["HTTP_HOST"] = host  # RFC 9112 3.2.2: absolute-form wins over Host
        if host:
            name, port = _server_names.get(host) or _server_name_of(host)
            environ["SERVER_NAME"] = name
            if port is not None:
                environ["SERVER_PORT"] = port
    if info.trust_proxy and ("HTTP_X_FORWARDED_FOR" in environ
                             or "HTTP_X_FORWARDED_PROTO" in environ):
        _apply_forwarded(environ)
    return environ


def _server_name_of(host: str) -> tuple[str, str | None]:
    """SERVER_NAME and SERVER_PORT from a Host (not empty); None: it names no port."""
    name, _, port = host.rpartition(":") if host[-1] != "]" else (host, "", "")
    found = (name, port) if name and port.isdigit() else (host, None)
    if len(_server_names) < CACHE_MAX:
        _server_names[host] = found
    return found


def _apply_forwarded(environ: dict) -> None:
    """Take client address and scheme from a trusted proxy's X-Forwarded-* fields."""
    forwarded_for = environ.get("HTTP_X_FORWARDED_FOR")
    if forwarded_for:
        # The rightmost entry is the one our proxy appended; entries left of it came
        # from the client and can be forged.
        environ["REMOTE_ADDR"] = forwarded_for.rsplit(",", 1)[-1].strip(" \t")
    proto = environ.get("HTTP_X_FORWARDED_PROTO", "").strip(" \t").lower()
    if proto in ("http", "https"):
        environ["wsgi.url_scheme"] = proto
