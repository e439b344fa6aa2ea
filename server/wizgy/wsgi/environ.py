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
            if len(_environ_keys) < 4096:
                _environ_keys[name] = key
        if key == "HTTP_CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
        elif key == "HTTP_CONTENT_LENGTH":
            environ["CONTENT_LENGTH"] = value
        elif key in environ:
            environ[key] += ("; " if key == "HTTP_COOKIE" else ", ") + value
        else:
            environ[key] = value
    if req.host is not None:
        environ["HTTP_HOST"] = req.host  # RFC 9112 3.2.2: absolute-form wins over Host
        host, _, port = req.host.rpartition(":") if req.host[-1:] != "]" else (req.host, "", "")
        if host and port.isdigit():
            environ["SERVER_NAME"], environ["SERVER_PORT"] = host, port
        elif req.host:
            environ["SERVER_NAME"] = req.host
    if info.trust_proxy and ("HTTP_X_FORWARDED_FOR" in environ
                             or "HTTP_X_FORWARDED_PROTO" in environ):
        _apply_forwarded(environ)
    return environ


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
