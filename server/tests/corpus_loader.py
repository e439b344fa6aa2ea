"""Load the request corpus in tests/corpus (format in its README.md).

Shared by the parser tests (test_http_parser.py, test_fuzz.py) and the smuggling lab
(loadtest/smuggle), which replays the invalid files over real sockets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from wizgy.http import Limits

CORPUS = Path(__file__).parent / "corpus"

ESCAPE = re.compile(rb"\\(x[0-9A-Fa-f]{2}|[rnt\\]|.?)", re.DOTALL)
SIMPLE_ESCAPES = {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"\\": b"\\"}


def decode_visible(text: bytes) -> bytes:
    """Join the lines of a corpus file and decode its escapes (corpus/README.md)."""
    joined = text.replace(b"\n", b"")

    def escape(m: re.Match) -> bytes:
        code = m.group(1)
        if code[:1] == b"x" and len(code) == 3:
            return bytes([int(code[1:], 16)])
        if code in SIMPLE_ESCAPES:
            return SIMPLE_ESCAPES[code]
        raise ValueError(f"unknown escape \\{code.decode('latin-1')!s} in corpus file")

    return ESCAPE.sub(escape, joined)


@dataclass
class Case:
    name: str
    data: bytes
    limits: Limits = field(default_factory=Limits)
    expect_status: int | None = None
    requests: list[dict[str, str]] = field(default_factory=list)


def load_case(path: Path) -> Case:
    raw = path.read_bytes()
    assert raw.isascii(), f"{path.name}: corpus files are ASCII; write other bytes as \\xHH"
    lines = raw.split(b"\n")
    comments = []
    while lines and lines[0].startswith(b"# "):
        comments.append(lines.pop(0)[2:].decode())
    case = Case(path.stem, decode_visible(b"\n".join(lines)))
    for comment in comments:
        key, _, rest = comment.partition(":")
        rest = rest.strip()
        if key == "expect":
            case.expect_status = int(rest.split()[0])
        elif key == "limits":
            case.limits = Limits(**{k: int(v) for k, v in _pairs(rest).items()})
        elif key == "request":
            case.requests.append(_pairs(rest))
        else:
            raise ValueError(f"{path.name}: unknown directive {key!r}")
    return case


def _pairs(text: str) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in text.split())


def corpus(kind: str) -> list[Case]:
    return [load_case(p) for p in sorted((CORPUS / kind).glob("*.http"))]
