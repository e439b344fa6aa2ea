"""Run a WSGI app on bjoern or meinheld, with N pre-forked workers.

`python peers.py bjoern|meinheld HOST:PORT WORKERS module:callable` (from the app's
folder). Neither server has a command line or a master process: the documented way
to run several is to bind once, then fork, each process running the server's own
loop on the shared listening socket. This does that and nothing else: no restarts,
no graceful stop (the harness ends the whole process group).
"""

from __future__ import annotations

import importlib
import os
import sys


def load(spec: str):
    sys.path.insert(0, os.getcwd())
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def run_bjoern(host: str, port: int, workers: int, app) -> None:
    import bjoern

    bjoern.listen(app, host, port, reuse_port=False)
    fork_workers(workers)
    bjoern.run()


def run_meinheld(host: str, port: int, workers: int, app) -> None:
    from meinheld import server

    server.set_access_logger(None)  # meinheld logs every request by default; the rest don't
    server.listen((host, port))
    fork_workers(workers)
    server.run(app)


def fork_workers(workers: int) -> None:
    """Fork workers - 1 children: they and this process each run the server's loop."""
    for _ in range(workers - 1):
        if os.fork() == 0:
            return


def main() -> None:
    kind, address, workers, spec = sys.argv[1:5]
    host, _, port = address.rpartition(":")
    app = load(spec)
    run = {"bjoern": run_bjoern, "meinheld": run_meinheld}[kind]
    print(f"{kind}: Listening at: http://{address} ({workers} worker(s))", flush=True)
    run(host, int(port), int(workers), app)


if __name__ == "__main__":
    main()
