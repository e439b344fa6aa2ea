"""-k iterative: one connection at a time. The tutorial's first server, grown up.

Lesson (part 3, the first experiment): nothing here runs two clients at once.
    wizgy -k iterative --chdir apps flaskapp:app
    curl 'http://127.0.0.1:8000/sleep?s=60'    # terminal 1: holds the server
    curl  http://127.0.0.1:8000/hello          # terminal 2: connects, then waits
The second client's connection is accepted by the kernel (it sits in the listen
backlog) but nobody calls accept() until the first request is done.
What fixes it: a concurrent model: -k fork, -k threaded or -k prefork.
"""

from __future__ import annotations

from ..connection import Connection
from .base import Model


class IterativeModel(Model):
    name = "iterative"

    def serve_forever(self) -> None:
        while self.stop is None:
            for listener in self.wait_for_connections():
                accepted = self.accept(listener)
                if accepted is not None:
                    self.serve_connection(*accepted)

    def serve_connection(self, sock, peer) -> None:
        self.ctx.stats.connections_total += 1
        self.ctx.stats.active += 1
        try:
            Connection(sock, peer, self.ctx).serve()
        finally:
            self.ctx.stats.active -= 1
