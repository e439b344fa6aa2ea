"""Coverage-guided fuzzing of wizgy.http.RequestParser with atheris (libFuzzer).

For long runs outside CI; the hypothesis tests in tests/test_fuzz.py are the CI part.
Each input is split in two: the first byte picks a chunk size (1..32) and a set of
tight limits or the defaults; the rest is fed to the parser in chunks of that size,
then end of stream. The harness fails (and libFuzzer saves the input) when the parser:

- raises anything other than HTTPError or ClientDisconnected;
- produces more events than the input can justify (a loop);
- breaks the Request, Data*, EndOfMessage order, or returns an empty Data;
- gives a different outcome (events, or error status) than when fed whole, with
  default limits (with tight limits a limit error may legitimately surface at a
  different byte, so only the outcome kind is compared there).

Running it
----------
atheris needs a clang with libFuzzer; on Linux x86-64 with CPython 3.11 a wheel
exists, so usually::

    python -m venv /tmp/fuzzvenv && /tmp/fuzzvenv/bin/pip install atheris
    cd server
    mkdir -p /tmp/parser-corpus && cp tests/corpus/*/*.http /tmp/parser-corpus/  # seeds
    PYTHONPATH=. /tmp/fuzzvenv/bin/python tests/fuzz/atheris_parser.py \\
        /tmp/parser-corpus -max_total_time=3600 -max_len=4096 -timeout=10

The seed files are in the corpus's visible format, not raw bytes; libFuzzer mutates
them into raw requests quickly, and `--raw-seeds DIR` (below) writes decoded copies
if you prefer to start from the real bytes::

    PYTHONPATH=. python tests/fuzz/atheris_parser.py --raw-seeds /tmp/parser-corpus

A crash leaves `crash-<sha1>` in the current directory; replay it with
`PYTHONPATH=. python tests/fuzz/atheris_parser.py crash-<sha1>` and add a minimal
version to tests/corpus/invalid/ (or valid/) as a regression case. -timeout=10
turns a hang (a loop in the parser) into a saved input too.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the server/ directory

from wizgy.http import (
    NEED_DATA,
    ClientDisconnected,
    ConnectionClosed,
    Data,
    EndOfMessage,
    HTTPError,
    Limits,
    Request,
    RequestParser,
)

TIGHT = Limits(request_line=24, fields=3, field_size=24, max_body=16)


def run(chunks: list[bytes], limits: Limits):
    """Feed chunks then EOF; return ("ok", events) or ("error", status/kind)."""
    parser = RequestParser(limits)
    budget = 2 * sum(map(len, chunks)) + 10
    events = []
    in_message = False
    try:
        for chunk in [*chunks, b""]:
            parser.receive(chunk)
            while (event := parser.next_event()) is not NEED_DATA:
                budget -= 1
                if budget < 0:
                    raise AssertionError("parser keeps producing events")
                if isinstance(event, Request):
                    assert not in_message, "Request inside a body"
                    in_message = True
                    events.append([event, b"", None])
                elif isinstance(event, Data):
                    assert in_message and event.data, "stray or empty Data"
                    events[-1][1] += event.data
                elif isinstance(event, EndOfMessage):
                    assert in_message, "EndOfMessage without Request"
                    in_message = False
                    events[-1][2] = event.trailers
                else:
                    assert isinstance(event, ConnectionClosed) and not in_message
                    return ("ok", events)
        raise AssertionError("no ConnectionClosed after end of stream")
    except HTTPError as error:
        return ("error", error.status)
    except ClientDisconnected:
        return ("error", "disconnected")


def test_one_input(data: bytes) -> None:
    if not data:
        return
    control, payload = data[0], data[1:]
    size = control % 32 + 1
    limits = TIGHT if control & 0x80 else Limits()
    chunks = [payload[i : i + size] for i in range(0, len(payload), size)]
    split = run(chunks, limits)
    whole = run([payload] if payload else [], limits)
    if limits is TIGHT:
        assert split[0] == whole[0], (split, whole)
    else:
        assert split == whole, (split, whole)


def write_raw_seeds(directory: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/
    from test_http_parser import INVALID, VALID

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for case in VALID + INVALID:
        (out / f"{case.name}.raw").write_bytes(b"\x07" + case.data)


def main() -> None:
    if sys.argv[1:2] == ["--raw-seeds"]:
        write_raw_seeds(sys.argv[2])
        return
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
