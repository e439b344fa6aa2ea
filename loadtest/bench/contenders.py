"""The servers the harness knows: one table entry each, the command that starts it.

A command is split like a shell line, then each word is filled in: {python} is the
interpreter that runs the server (the bench venv's; for a `runtime="pypy"` server the
PyPy bench venv's, .venv-pypy), {bench} this folder, {host}
{port} {bind} the address, {workers} the worker count, {app} the scenario's
module:callable and {appdir} its folder (every server also starts in that folder).
`workers_max` is the most workers a server can run (None: any); scenarios that need
more report n/a. `module` must be importable for the server to count as installed.
To change how a server runs, change its line here and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Contender:
    name: str
    command: str
    module: str
    workers_max: int | None = None
    note: str = ""
    skips: tuple[tuple[str, str], ...] = ()  # (scenario, why it does not run there)
    runtime: str = "cpython"  # or "pypy"


WIZGY = "{python} -m wizgy -b {bind} -w {workers} --chdir {appdir}"
GUNICORN = "{python} -m gunicorn -b {bind} -w {workers} --chdir {appdir}"

# fmt: off
CONTENDERS = [
    # "wizgy" is what `wizgy -w N -b HOST:PORT app:app` runs: the default model, evloop
    # (the pre-fork master with event-loop workers).
    Contender("wizgy", f"{WIZGY} {{app}}", "wizgy",
              note="default model: prefork master + evloop workers"),
    Contender("wizgy-iterative", f"{WIZGY} -k iterative {{app}}", "wizgy", workers_max=1),
    Contender("wizgy-threaded", f"{WIZGY} -k threaded {{app}}", "wizgy", workers_max=1),
    Contender("wizgy-evloop", f"{WIZGY} -k evloop {{app}}", "wizgy"),
    Contender("wizgy-fork", f"{WIZGY} -k fork {{app}}", "wizgy", workers_max=1),
    Contender("wizgy-prefork", f"{WIZGY} -k prefork {{app}}", "wizgy",
              note="master + workers running the iterative loop"),
    Contender("gunicorn-sync", f"{GUNICORN} -k sync {{app}}", "gunicorn"),
    Contender("gunicorn-gthread", f"{GUNICORN} -k gthread --threads 4 {{app}}", "gunicorn",
              note="--threads 4"),
    Contender("waitress", "{python} -m waitress --listen={bind} {app}", "waitress",
              workers_max=1, note="one process, 4 threads, connection_limit 100 (defaults)"),
    Contender("meinheld", "{python} {bench}/peers.py meinheld {bind} {workers} {app}",
              "meinheld", note="bind, then fork (peers.py); access log off"),
    Contender("granian", "{python} -m granian --interface wsgi --http 1 --host {host} "
              "--port {port} --workers {workers} --no-access-log {app}", "granian"),
    Contender("bjoern", "{python} {bench}/peers.py bjoern {bind} {workers} {app}", "bjoern",
              note="bind, then fork (peers.py)"),
    # Not a server: the least a Python WSGI server does per request (floor.py says what
    # it skips). No Python server passes it; it shows where that line is today.
    Contender("python-floor", "{python} {bench}/floor.py {bind} {workers} {app}", "select",
              note="not a server: recv, app call, send; parses nothing (floor.py)",
              skips=(("post-1m", "reads no request bodies"),
                     ("stream-64k", "joins a streamed body into one send (PEP 3333 forbids)"))),
]
# fmt: on

# The same servers on PyPy, the same commands: the JIT compiles the whole request path
# there, the server's own Python and the app's. A peer whose C extension does not build
# for PyPy shows as "not installed" with pip's reason, not left out.
ON_PYPY = {
    "wizgy": "wizgy-pypy",
    "gunicorn-sync": "gunicorn-pypy",
    "waitress": "waitress-pypy",
    "granian": "granian-pypy",
    "bjoern": "bjoern-pypy",
    "meinheld": "meinheld-pypy",
    "python-floor": "python-floor-pypy",  # the line a pure-Python server meets on PyPy
}
CONTENDERS += [
    replace(c, name=ON_PYPY[c.name], runtime="pypy", note="; ".join(filter(None, ["PyPy", c.note])))
    for c in CONTENDERS
    if c.name in ON_PYPY
]

BY_NAME = {c.name: c for c in CONTENDERS}
DEFAULT = ["wizgy", "gunicorn-sync", "gunicorn-gthread", "waitress", "meinheld", "granian",
           "bjoern", "python-floor", *ON_PYPY.values()]  # fmt: skip
BASELINE = "gunicorn-sync"
