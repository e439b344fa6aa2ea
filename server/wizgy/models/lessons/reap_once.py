"""Lesson reap-once: one wait() per SIGCHLD, as the tutorial's first handler did.

Standard signals do not queue: while one SIGCHLD is pending, more children exiting
add nothing. Python adds a second merge: the C-level handler only sets a flag, and
the Python handler runs once per pending signal *number* when the main loop next
gets a turn. ForkModel.on_child_exit counts the signals that got through; here each
one is answered with exactly one os.wait(). With 128 clients at once, children end
together, their signals merge, and zombies stay behind (`ps`: `<defunct>`).

The fix is ForkModel.reap_children(): waitpid(-1, WNOHANG) until none has exited.
"""

from __future__ import annotations

import os

from ..fork import ForkModel


class ReapOnceModel(ForkModel):
    lesson = ("reap-once: one wait() per SIGCHLD; signals that arrive together merge "
              "into one, so zombies remain after concurrent clients")

    def reap_children(self) -> None:
        while self.sigchld_count:  # the bug: one child per signal, not all that exited
            self.sigchld_count -= 1
            pid, status = os.wait()
            self.forget_child(pid, status)
