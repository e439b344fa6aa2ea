"""The layers import downward only (STYLE.md): cli/config -> models -> parked ->
connection -> cycle -> context -> wsgi -> http. Read from the source with ast, so a lower layer that
imports a higher one fails here, however deep inside a function the import hides."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

WIZGY = Path(__file__).resolve().parents[2] / "wizgy"

# Low to high: a module may import its own layer and the layers below it.
LAYERS = ["http", "wsgi", "context", "cycle", "connection", "parked", "models", "cli"]
RANK = {name: rank for rank, name in enumerate(LAYERS)}
RANK.update({"__main__": RANK["cli"], "config": RANK["cli"], "status": RANK["cli"],
             "top": RANK["cli"]})
# Helpers of the standard library's kind: they import no other part of wizgy, and
# only the layers from `context` up may use them (http and wsgi touch no socket, no
# OS, no log: everything below the connection can be tested with bytes).
LEAVES = {"compat", "log", "events", "proctitle", "scoreboard", "starting"}
LEAF_USERS_FROM = RANK["context"]
# The http package is sans-IO: none of these, in any of its modules.
NO_IO = {"socket", "os", "threading", "select", "selectors", "asyncio", "time", "subprocess",
         "signal"}


def layer_of(module: str) -> str:
    """`wizgy.wsgi.app` -> "wsgi"; `wizgy` -> "" (the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports_of(module: str, source: str, is_package: bool = False) -> list[tuple[str, int]]:
    """(imported module, line) for each import in `source`, relative ones resolved.
    `from . import x` names the module `x` of that package."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, node.module] if node.module else base)
            if node.module is None:  # from . import a, b: each is a module of the package
                found += [(f"{target}.{alias.name}", node.lineno) for alias in node.names]
            else:
                found.append((target, node.lineno))
    return found


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    """What is wrong with the imports of one module of wizgy."""
    own = layer_of(module)
    wrong = []
    for target, line in imports_of(module, source, is_package):
        where = f"{module}:{line} imports {target}"
        if own == "http" and target.split(".")[0] in NO_IO:
            wrong.append(f"{where}: the http layer does no I/O")
        if target.split(".")[0] != "wizgy":
            continue
        theirs = layer_of(target)
        if theirs in ("", own):
            continue
        if own in LEAVES:
            wrong.append(f"{where}: a leaf helper imports no other part of wizgy")
        elif theirs in LEAVES:
            if RANK[own] < LEAF_USERS_FROM:
                wrong.append(f"{where}: {own} stays below the helpers")
        elif theirs not in RANK:
            wrong.append(f"{where}: {theirs} has no place in LAYERS (add it)")
        elif RANK[theirs] > RANK[own]:
            wrong.append(f"{where}: {own} is below {theirs}")
    return wrong


def modules():
    for path in sorted(WIZGY.rglob("*.py")):
        relative = path.relative_to(WIZGY.parent).with_suffix("")
        is_package = relative.name == "__init__"
        parts = relative.parts[:-1] if is_package else relative.parts
        yield ".".join(parts), path, is_package


def test_every_module_has_a_layer():
    unknown = {layer_of(m) for m, _, _ in modules()} - set(RANK) - LEAVES - {""}
    assert not unknown, f"modules outside LAYERS and LEAVES: {unknown}"


def test_layers_import_downward_only():
    wrong = []
    for module, path, is_package in modules():
        wrong += violations(module, path.read_text(), is_package)
    assert not wrong, "\n".join(wrong)


def test_the_request_path_is_split_into_layers():
    """The packages the README's reading order names are there."""
    for name in ("http/__init__.py", "http/parser.py", "http/framing.py", "http/body.py",
                 "http/writer.py", "wsgi/__init__.py",
                 "wsgi/response.py", "wsgi/app.py", "context.py", "cycle.py", "connection.py",
                 "parked.py"):
        assert (WIZGY / name).is_file(), name


@pytest.mark.parametrize(("module", "source", "complaint"), [
    ("wizgy.wsgi.response", "from ..connection import Connection\n", "wsgi is below connection"),
    ("wizgy.http.parser", "from ..wsgi import Response\n", "http is below wsgi"),
    ("wizgy.http.parser", "import socket\n", "does no I/O"),
    ("wizgy.http.writer", "def f():\n    import time\n", "does no I/O"),
    ("wizgy.wsgi.app", "from .. import compat\n", "stays below the helpers"),
    ("wizgy.connection", "from .models import base\n", "connection is below models"),
    ("wizgy.context", "from wizgy.connection import Connection\n", "context is below"),
    ("wizgy.log", "from .http import Request\n", "leaf helper"),
])
def test_the_check_fails_on_an_upward_import(module, source, complaint):
    """The check itself can fail: each of these imports breaks the layering."""
    found = violations(module, source)
    assert len(found) == 1 and complaint in found[0], found


@pytest.mark.parametrize(("module", "source"), [
    ("wizgy.connection", "from .wsgi import Response\nfrom .compat import TIMEOUT\n"),
    ("wizgy.wsgi.app", "from ..http import HTTPError\nfrom .response import Response\n"),
    ("wizgy.models.fork", "from ..connection import Connection\nimport os\n"),
    ("wizgy.cli", "from . import config, models, status\n"),
])
def test_the_check_passes_a_downward_import(module, source):
    assert violations(module, source) == []
