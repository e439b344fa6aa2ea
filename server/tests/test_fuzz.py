"""Property-based fuzzing of the request parser (issue 7, "Fuzzing").

- Random splits of valid requests (corpus and generated) always give the same events.
- Random bytes, grammar-shaped garbage and mutated corpus requests raise nothing but
  HTTPError or ClientDisconnected, never loop, and give the same outcome however the
  bytes are split.
- Differential: h11 (an independent parser, test-only) sees the same method, target,
  headers, body and trailers on the valid corpus and on generated requests.

Example counts are kept modest so the whole file runs in well under a minute; set
WIZGY_FUZZ_SCALE=20 for a deeper local run (with --timeout=0: pyproject's 300 s
per-test timeout is for CI), or use tests/fuzz/atheris_parser.py.
"""

from __future__ import annotations

import os

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_http_parser import DEFAULT_LIMITS, VALID, drive, messages

from wizgy.http import SINGLE_VALUE, ClientDisconnected, HTTPError, Limits
from wizgy.http.abnf import HOST
from wizgy.http.framing import plain_host
from wizgy.http.parser import matched_head, plain_head

# Example counts per test, multiplied by WIZGY_FUZZ_SCALE for a deeper local run
# (e.g. WIZGY_FUZZ_SCALE=100). Per-test settings, not a loaded profile, so importing
# this file changes nothing for other tests.
SCALE = int(os.environ.get("WIZGY_FUZZ_SCALE", "1"))


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples * SCALE,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --- helpers ----------------------------------------------------------------------------


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:]) if b > a]  # pairwise: 3.10+


def outcome(chunks: list[bytes], limits: Limits = DEFAULT_LIMITS):
    """What the parser made of the bytes: its messages, or the error it raised."""
    try:
        return messages(drive(chunks, limits))
    except HTTPError as error:
        return ("HTTPError", error.status)
    except ClientDisconnected:
        return ("ClientDisconnected",)


def comparable(got: list, like_h11: bool = False) -> list:
    """Our messages as (method, target, headers, body, trailers) in bytes, like h11's.

    like_h11: stop after the first request h11 will not read past: one that is not
    keep-alive, or any HTTP/1.0 request (h11 does not do 1.0 keep-alive)."""
    out = []
    for item in got:
        if item == "closed":
            break
        request, body, trailers = item
        out.append(
            (
                request.method.encode(),
                request.target.encode(),
                normalise((n.encode(), v.encode("latin-1")) for n, v in request.headers),
                body,
                [(n.encode(), v.encode("latin-1")) for n, v in trailers],
            )
        )
        if like_h11 and (not request.keep_alive or request.version == "HTTP/1.0"):
            break
    return out


def normalise(headers) -> list:
    """h11 lowercases Transfer-Encoding values (coding names are case-insensitive)."""
    return [(n, v.lower() if n.lower() == b"transfer-encoding" else v) for n, v in headers]


def h11_view(data: bytes) -> list:
    """What h11, as a server, reads from the same bytes (answering each request with
    an empty 200 so it moves on to the next pipelined one)."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    conn.receive_data(b"")
    out: list = []
    current = None
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Request):
            headers = normalise(event.headers.raw_items())
            current = [event.method, event.target, headers, b"", []]
        elif isinstance(event, h11.Data):
            current[3] += event.data
        elif isinstance(event, h11.EndOfMessage):
            current[4] = list(event.headers.raw_items())
            out.append(tuple(current))
            conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
            conn.send(h11.EndOfMessage())
            if conn.their_state is not h11.DONE:
                return out
            conn.start_next_cycle()
        else:  # ConnectionClosed, or NEED_DATA / PAUSED at end of stream
            return out


# --- the valid corpus ---------------------------------------------------------------------

# Where h11 0.16 and RFC 9112 part ways, and wizgy follows the RFC. h11 raises on these.
H11_STRICTER = {
    "leading-empty-line": "RFC 9112 2.2: a server SHOULD ignore empty lines before a request",
    "leading-empty-lines-after-body": "the same, after a Content-Length body",
    "chunked-extensions-trailers": "RFC 9112 7.1.1 allows BWS before ';' in chunk-ext",
}


# Where wizgy hands on less than h11 does, on purpose.
WIZGY_KEEPS_ONCE = {
    "single-value-repeated-same": "RFC 9110 5.3: a single-value field sent twice with the "
    "same value is one field (h11 passes both on)",
}


def first_of_each(view: list, names: set[bytes]) -> list:
    """h11's view with only the first of each field named in `names` kept."""
    out = []
    for method, target, headers, body, trailers in view:
        seen, kept = set(), []
        for name, value in headers:
            if name.lower() in names:
                if name.lower() in seen:
                    continue
                seen.add(name.lower())
            kept.append((name, value))
        out.append((method, target, kept, body, trailers))
    return out


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.name)
def test_h11_agrees_on_valid_corpus(case):
    ours = comparable(messages(drive([case.data], case.limits)), like_h11=True)
    if case.name in H11_STRICTER:
        with pytest.raises(h11.RemoteProtocolError):
            h11_view(case.data)
        return
    if case.name in WIZGY_KEEPS_ONCE:
        assert first_of_each(h11_view(case.data), {b"content-type", b"user-agent"}) == ours
        assert h11_view(case.data) != ours
        return
    assert h11_view(case.data) == ours


@fuzz(200)
@given(case=st.sampled_from(VALID), cuts=st.lists(st.integers(min_value=0), max_size=40))
def test_corpus_random_splits(case, cuts):
    whole = messages(drive([case.data], case.limits))
    assert messages(drive(split_at(case.data, cuts), case.limits)) == whole


# --- generated valid requests --------------------------------------------------------------

TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
PCHAR = "abcXYZ019-._~!$&'()*+,;=:@%/"
# Header names h11 acts on (framing, connection management, protocol switches): kept
# out of the random headers and added deliberately by the strategy instead.
SPECIAL = {"host", "content-length", "transfer-encoding", "connection", "expect", "upgrade", "te",
           *SINGLE_VALUE}  # (and ones wizgy refuses twice: a random list may repeat a name)

tokens = st.text(alphabet=TCHAR, min_size=1, max_size=12)
methods = st.one_of(
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
    tokens.filter(lambda m: m not in ("CONNECT", "HEAD")),  # both change h11's framing
)
targets = st.builds(
    lambda path, query: "/" + path + ("?" + query if query is not None else ""),
    st.text(alphabet=PCHAR, max_size=30),
    st.none() | st.text(alphabet=PCHAR + "?/", max_size=20),
)
# field-value: visible ASCII and obs-text, with single interior spaces/tabs.
value_chars = st.sampled_from([bytes([b]) for b in [*range(0x21, 0x7F), *range(0x80, 0x100)]])
words = st.lists(value_chars, min_size=1, max_size=8).map(b"".join)
values = st.lists(words, max_size=4).flatmap(
    lambda ws: st.lists(
        st.sampled_from([b" ", b"\t", b"  "]), min_size=len(ws), max_size=len(ws)
    ).map(lambda seps: b"".join(w + s for w, s in zip(ws, seps, strict=True)).rstrip(b" \t"))
)
fields = st.lists(st.tuples(tokens.filter(lambda n: n.lower() not in SPECIAL), values), max_size=6)
ows = st.sampled_from([b"", b" ", b"\t", b" \t "])
bodies = st.binary(max_size=300)


@st.composite
def requests(draw, version=None):
    """One valid request: (wire bytes, expected (method, target, headers, body, trailers))."""
    version = version or draw(st.sampled_from(["1.1", "1.0"]))
    method, target = draw(methods), draw(targets)
    headers = [(n.encode(), v) for n, v in draw(fields)]
    if version == "1.1" or draw(st.booleans()):
        headers.insert(draw(st.integers(0, len(headers))), (b"Host", b"example.com"))
    framing = draw(
        st.sampled_from(["none", "length", "chunked"] if version == "1.1" else ["none", "length"])
    )
    body, trailers, wire_body = b"", [], b""
    if framing == "length":
        body = draw(bodies)
        headers.append((b"Content-Length", str(len(body)).encode()))
        wire_body = body
    elif framing == "chunked":
        chunks = draw(st.lists(st.binary(min_size=1, max_size=80), max_size=5))
        body = b"".join(chunks)
        trailers = [(n.encode(), v) for n, v in draw(fields)]
        ext = draw(st.sampled_from([b"", b";a", b";a=b", b';q="x y"']))
        wire_body = b"".join(b"%x%s\r\n%s\r\n" % (len(c), ext, c) for c in chunks)
        wire_body += b"0\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in trailers) + b"\r\n"
        headers.append((b"Transfer-Encoding", b"chunked"))
    if version == "1.0":
        headers.append((b"Connection", b"keep-alive"))
    head = b"%s %s HTTP/%s\r\n" % (method.encode(), target.encode(), version.encode())
    for name, value in headers:
        head += name + b":" + draw(ows) + value + draw(ows) + b"\r\n"
    wire = head + b"\r\n" + wire_body
    return wire, (method.encode(), target.encode(), headers, body, trailers)


pipelines = st.lists(requests(), min_size=1, max_size=3)


@pytest.mark.slow
@fuzz(300)
@given(pipeline=pipelines, cuts=st.lists(st.integers(min_value=0), max_size=30))
def test_generated_requests_any_split(pipeline, cuts):
    data = b"".join(wire for wire, _ in pipeline)
    expected = [want for _, want in pipeline]
    assert comparable(messages(drive([data]))) == expected
    assert comparable(messages(drive(split_at(data, cuts)))) == expected


@pytest.mark.slow
@fuzz(300)
@given(pipeline=pipelines)
def test_h11_agrees_on_generated_requests(pipeline):
    data = b"".join(wire for wire, _ in pipeline)
    assert h11_view(data) == comparable(messages(drive([data])), like_h11=True)


# --- garbage: only our own errors, and the same outcome for every split ---------------------

# fmt: off
FRAGMENTS = [
    b"GET", b"POST", b" ", b"  ", b"/", b"/a?b", b"*", b"http://h/", b"HTTP/1.1", b"HTTP/1.0",
    b"HTTP/2.0", b"\r\n", b"\r\n\r\n", b"\r", b"\n", b"\t", b"\x00", b"\x7f", b"\xff", b":",
    b"Host: h", b"Content-Length: ", b"Transfer-Encoding: ", b"chunked", b"gzip", b",",
    b"Connection: close", b"Expect: 100-continue", b"0", b"5", b"-1", b"+1", b"ffff", b";",
    b"=", b"hello", b"X-A: b", b"0\r\n\r\n", b"5\r\nhello\r\n", b"99999999999999999999",
]
# fmt: on
grammar_garbage = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map(b"".join)


@st.composite
def mutated_corpus(draw):
    data = bytearray(draw(st.sampled_from(VALID)).data)
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = draw(st.sampled_from(b"\r\n\t :;0aA\x00\x80,-+x") | st.integers(0, 255))
        if op == "insert":
            data[pos:pos] = bytes([byte])
        elif op == "delete":
            del data[pos : pos + 1]
        else:
            data[pos : pos + 1] = bytes([byte])
    return bytes(data)


def check_garbage(data: bytes, cuts: list[int]) -> None:
    whole = outcome([data])  # anything else than our own errors propagates and fails
    assert outcome(split_at(data, cuts)) == whole
    assert outcome([data[i : i + 1] for i in range(len(data))]) == whole


@pytest.mark.slow
@fuzz(500)
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_random_bytes(data, cuts):
    check_garbage(data, cuts)


@pytest.mark.slow
@fuzz(800)
@given(data=grammar_garbage, cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_grammar_shaped_garbage(data, cuts):
    check_garbage(data, cuts)


@pytest.mark.slow
@fuzz(1500)
@given(data=mutated_corpus(), cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_mutated_corpus(data, cuts):
    check_garbage(data, cuts)


@fuzz(500)
@given(data=mutated_corpus() | grammar_garbage)
def test_tight_limits_only_raise_our_errors(data):
    # With tiny limits a limit error may surface at a different byte depending on the
    # split (the status can differ from a later syntax error), so only the kind of
    # outcome is checked here, not its equality across splits.
    limits = Limits(request_line=12, fields=2, field_size=10, max_body=4)
    outcome([data], limits)
    outcome([data[i : i + 1] for i in range(len(data))], limits)


# --- the plain head path against HEAD ---------------------------------------------------
# parser.plain_head reads the commonest heads with str methods (PyPy's regex engine is
# slow there and allocates); whatever it accepts, HEAD must accept and read the same, or
# a request would mean one thing to wizgy and another to the proxy the corpus tests
# stand for. Pieces are drawn near the grammar's edges: controls, HTAB, C1, NBSP,
# soft hyphen, latin-1 letters, spaces around colons, versions off by one.

EDGES = " \t\r\n\x00\x1f\x7f\x80\x85\x9f\xa0\xad\xe9\xff:"


def near(choices: list[str], alphabet: str, max_size: int):
    return st.sampled_from(choices) | st.text(alphabet=alphabet + EDGES, max_size=max_size)


head_methods = near(["GET", "POST", "get", "M-SEARCH", "GE T", "", "G\xe9T", "\xaa"],
                    "GETPOSabc-_!", 6)
head_targets = near(["/", "/a?b=c", "*", "http://h/x", "/%7e", "", "/\xe9"], "/a?=%.-~#", 10)
head_versions = st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/1.2", "HTTP/2.0", "http/1.1",
                                 "HTTP/1.1 ", " HTTP/1.1", "HTTP/1.", "HTTP/1.1\r"])
field_names = near(["Host", "Content-Length", "X-A", "-", "a_b", "Host ", " Host", "H\xe9st"],
                   "HostXa0-_", 8)
field_values = near(["", "x", " x ", "\tx", "x\t", "a, b", "\xe9", "\xa0", "x\r"],
                    "ab 1,;=", 10)
field_lines = st.tuples(field_names, st.sampled_from([":", ": ", " :", ":\t", ""]),
                        field_values).map("".join)
plain_heads = st.builds(lambda m, t, v, f: "\r\n".join([f"{m} {t} {v}", *f]),
                        head_methods, head_targets, head_versions,
                        st.lists(field_lines, max_size=4))


def test_the_plain_head_path_takes_the_common_heads():
    for text in ("GET / HTTP/1.1\r\nHost: 127.0.0.1:8000",
                 "POST /a?b=c HTTP/1.0\r\nContent-Length: 5\r\nConnection:  close ",
                 "GET /x HTTP/1.1\r\nHost: h\r\nUser-Agent: Mozilla/5.0 (X11) \xe9\r\n"
                 "Accept-Encoding: gzip, br\r\nX-Empty:"):
        assert plain_head(text) is not None and plain_head(text) == matched_head(text)
    for text in ("GET / HTTP/1.1\r\nX:\tvalue", "GET / HTTP/1.1\r\nX_Y: v",
                 "GET / HTTP/1.1\r\nX: \x85", "GET / HTTP/1.1\r\nHost : h"):
        assert plain_head(text) is None  # left to HEAD, which reads or refuses it


@fuzz(3000)
@given(text=plain_heads)
def test_the_plain_head_path_reads_only_what_head_reads_the_same(text):
    plain = plain_head(text)
    if plain is not None:
        assert plain == matched_head(text)


@fuzz(2000)
@given(host=near(["127.0.0.1:8000", "a.b-c", "h:", ":80", "[::1]:8", "a:b:c", "\u0665"],
                 "ab.-0:9[]_%", 12))
def test_a_plain_host_is_a_valid_host(host):
    if plain_host(host):
        assert HOST.fullmatch(host)
