"""The framing rule (RFC 9112 section 6): from a parsed head, decide where the
message's body ends, and refuse every head two parsers could frame two ways.

`frame()` is the one place that reads Content-Length, Transfer-Encoding, Host,
Connection and Expect: a request that sends both Content-Length and
Transfer-Encoding, two different Content-Lengths, a Transfer-Encoding other than a
single final `chunked`, or no Host in HTTP/1.1 is refused here, never guessed at,
because that ambiguity is what request smuggling exploits (RFC 9112 section 11.2).
"""

from __future__ import annotations

import re

from .abnf import ABSOLUTE_FORM, HOST, NOTED, OWS_TEXT, SINGLE_VALUE, TOKEN
from .errors import HTTPError
from .events import Request


def frame(method: str, target: str, version: str, headers, max_body: int,
          valid_host: str | None = None) -> Request:
    """The Request a parsed head makes, once its framing is known to be unambiguous.
    `valid_host`: a Host value that passed HOST already (clients repeat theirs)."""
    content_length = transfer_encoding = host = singles = None
    hosts = 0
    connection = expect = ""
    repeated = False
    for name, value in headers:
        key = name.lower()
        if key not in NOTED:
            continue
        if key in SINGLE_VALUE:
            if singles is None:
                singles = {key: value}
            elif key not in singles:
                singles[key] = value
            elif singles[key] == value:
                repeated = True  # the same value again: kept once, below
            else:
                raise HTTPError(400, f"two {name} fields with different values")
        elif key == "host":
            hosts += 1
            if host is None:
                host = value
        elif key == "content-length":
            if content_length is not None:
                raise HTTPError(400, "more than one Content-Length")
            content_length = parse_content_length(value)
        elif key == "transfer-encoding":
            transfer_encoding = (
                value if transfer_encoding is None else transfer_encoding + "," + value
            )
        elif key == "connection":
            connection += "," + value.lower()
        else:  # expect
            expect = value.lower()
    if repeated:
        headers = drop_repeats(headers)

    chunked = False
    if transfer_encoding is not None:
        if content_length is not None:
            # RFC 9112 6.1: the classic smuggling vector; refuse outright.
            raise HTTPError(400, "both Content-Length and Transfer-Encoding")
        if version == "HTTP/1.0":
            raise HTTPError(400, "Transfer-Encoding in an HTTP/1.0 request")
        chunked = transfer_coding(transfer_encoding)
    elif content_length is not None:
        if max_body and content_length > max_body:
            raise HTTPError(413, f"body of {content_length} bytes exceeds {max_body}")

    # RFC 9112 3.2: exactly one Host in HTTP/1.1.
    if hosts > 1:
        raise HTTPError(400, "more than one Host header")
    if host is None and version == "HTTP/1.1":
        raise HTTPError(400, "HTTP/1.1 request without Host")
    if host is not None and host != valid_host:
        if not plain_host(host) and not HOST.fullmatch(host):
            raise HTTPError(400, f"invalid Host {host[:64]!r}")

    path, query, target_host = split_target(method, target)
    if connection:
        tokens = {t.strip(OWS_TEXT) for t in connection.split(",")}
        if version == "HTTP/1.1":
            keep_alive = "close" not in tokens
        else:
            keep_alive = "keep-alive" in tokens and "close" not in tokens
    else:
        keep_alive = version == "HTTP/1.1"
    return Request(  # positional: fields in the order the class declares them
        method, target, path, query, version, tuple(headers), content_length, chunked,
        keep_alive, expect == "100-continue" and version == "HTTP/1.1",
        target_host if target_host is not None else host,
    )


def plain_host(host: str) -> bool:
    """A host name or IPv4 address of ASCII letters, digits, "." and "-", and a port of
    digits if any: valid without HOST, whose regex engine allocates on PyPy (2.3 KB a
    check; a new connection's first request checks its Host). Anything else, HOST
    decides; everything this accepts HOST accepts (reg-name and port characters)."""
    name, _, port = host.partition(":")
    return name.isascii() and port.isascii() and (not port or port.isdigit()) and \
        (name.isalnum() or name.replace(".", "").replace("-", "").isalnum())


def drop_repeats(headers) -> list[tuple[str, str]]:
    """Keep the first of each single-value field (the others repeat its value), so
    that the app sees `text/plain`, not `text/plain, text/plain`."""
    seen = set()
    kept = []
    for name, value in headers:
        key = name.lower()
        if key in SINGLE_VALUE:
            if key in seen:
                continue
            seen.add(key)
        kept.append((name, value))
    return kept


def parse_content_length(value: str) -> int:
    # Content-Length = 1*DIGIT. int() would also take "+5", " 5", "5_0" and "٥".
    if not value.isascii() or not value.isdigit():
        raise HTTPError(400, f"malformed Content-Length {value!r}")
    if len(value) > 18:
        raise HTTPError(400, "Content-Length too large")
    return int(value)


def transfer_coding(value: str) -> bool:
    # Strip only OWS (SP, HTAB): str.strip() would also take "\xa0" or "\x85" off
    # "chunked\xa0", a value a proxy in front may not read as chunked at all.
    codings = [c.strip(OWS_TEXT) for c in value.split(",")]
    for coding in codings:
        if not re.fullmatch(TOKEN.decode(), coding):
            raise HTTPError(400, f"malformed Transfer-Encoding {value!r}")
    codings = [c.lower() for c in codings]
    if codings != ["chunked"]:
        # RFC 9112 6.1: only a single, final chunked is a body we can delimit.
        raise HTTPError(501, f"unsupported Transfer-Encoding {value!r}")
    return True


def split_target(method: str, target: str) -> tuple[str, str, str | None]:
    """Return (path, query, host-from-target) for the four request-target forms."""
    if "#" in target:
        raise HTTPError(400, "fragment in request target")
    if method == "CONNECT":
        # RFC 9110 9.3.6: a tunnel, which a WSGI origin server does not make; 501 is
        # what a server answers a method it does not implement (RFC 9110 9.1,
        # 15.6.2). Whatever the target's form: handed to an app that answers 2xx,
        # a proxy in front would take the connection for an open tunnel.
        raise HTTPError(501, "CONNECT is not supported")
    host = None
    if target[0] != "/":
        if target == "*" and method == "OPTIONS":  # asterisk-form: PATH_INFO is ""
            return "", "", None  # (CGI: empty or "/..."); RAW_URI keeps the "*"
        m = ABSOLUTE_FORM.fullmatch(target)  # absolute-form (RFC 9112 3.2.2)
        if m is None:
            raise HTTPError(400, "malformed request target")
        host = m.group(2)
        # RFC 9110 4.2.1: an http(s) URI with an empty host MUST be rejected;
        # RFC 9110 4.2.4: userinfo in one SHOULD be treated as an error.
        valid = HOST.fullmatch(host)
        if valid is None or not valid.group(1):
            raise HTTPError(400, f"invalid authority in request target {host[:64]!r}")
        target = m.group(3) or "/"
        if target[0] != "/":
            target = "/" + target
    path, _, query = target.partition("?")
    return path, query, host
