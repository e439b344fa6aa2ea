"""--reload: the prefork master notices a changed .py file and reloads as HUP does.

Development only. The master polls (a stat() per file, once a second) rather than
using inotify, to stay in the standard library and work on every platform and
bind mount. It watches the .py files under the working directory (after --chdir) and
the --pythonpath directories, as uvicorn's --reload watches its directory; not the
modules the app imported, since a framework imports most of the app lazily (Django
its views on the first request), in the workers, never in the master.
"""

from __future__ import annotations

import os

SKIP_DIRS = {"__pycache__", "site-packages", "node_modules"}
MAX_FILES = 10_000  # a watch this big is a mistake (--chdir /): stop growing it


def app_roots(settings) -> list[str]:
    """The app's own folders: the working directory (after --chdir) and --pythonpath."""
    return [os.getcwd(), *filter(None, (settings.pythonpath or "").split(","))]


def is_app_file(path: str | None, roots: list[str]) -> bool:
    """Is this file the app's own code: under one of its folders, and not in a hidden
    folder, a cache or a virtualenv there?"""
    if not path:
        return False
    path = os.path.abspath(path)
    for root in map(os.path.abspath, roots):
        relative = os.path.relpath(path, root)
        if relative.startswith(".."):
            continue
        folder = root
        for part in relative.split(os.sep)[:-1]:
            folder = os.path.join(folder, part)
            if part.startswith(".") or part in SKIP_DIRS or \
                    os.path.exists(os.path.join(folder, "pyvenv.cfg")):
                return False
        return True
    return False


class CodeWatcher:
    def __init__(self, roots: list[str]) -> None:
        self.roots = [os.path.abspath(root) for root in roots]
        self.mtimes = self.scan()

    def scan(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for root in self.roots:
            for folder, dirs, files in os.walk(root):
                # hidden folders (.git, .venv), caches, and virtualenvs are not app code
                dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS
                           and not os.path.exists(os.path.join(folder, d, "pyvenv.cfg"))]
                for name in files:
                    if name.endswith(".py"):
                        path = os.path.join(folder, name)
                        try:
                            found[path] = os.stat(path).st_mtime_ns
                        except OSError:
                            continue  # removed while we looked
                        if len(found) >= MAX_FILES:
                            return found
        return found

    def changed(self) -> list[str]:
        """Files added, changed or removed since the last call."""
        now = self.scan()
        before, self.mtimes = self.mtimes, now
        return sorted(path for path in now.keys() | before.keys()
                      if now.get(path) != before.get(path))
