"""Lesson keep-duplicate-fds: the parent forgets to close its copy of the client socket.

After fork() parent and child each hold a descriptor for the same connection. The
kernel sends FIN only when the *last* one is closed, so when the child has answered
and closed its copy, the client still waits for EOF: a `Connection: close` response
never ends (curl hangs). And each connection costs the parent one descriptor for
good: under `ulimit -n 256`, some 250 connections in, accept() fails with EMFILE.

The fix is ForkModel.close_parent_copy(): `sock.close()`.
"""

from __future__ import annotations

import socket

from ..fork import ForkModel


class KeepDuplicateFdsModel(ForkModel):
    lesson = ("keep-duplicate-fds: the parent never closes its copy of a client socket; "
              "clients get no EOF after their response and the parent runs out of "
              "descriptors (ulimit -n)")

    def close_parent_copy(self, sock: socket.socket) -> None:
        # The bug: the descriptor stays open. (detach() rather than doing nothing: in
        # Python a forgotten socket object closes its descriptor when it is collected,
        # which would quietly fix the bug.)
        sock.detach()
