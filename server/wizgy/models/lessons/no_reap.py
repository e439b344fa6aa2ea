"""Lesson no-reap: the parent never waits for its children.

A process that has exited keeps its process table entry, exit status included,
until its parent collects it with wait(): until then it is a zombie (`ps` shows
`Z` and `<defunct>`). Nobody collects them here, so every connection leaves one,
and under a process limit (`ulimit -u`, a container's pids limit) fork() ends up
failing: the parent answers 503.

The fix is ForkModel.reap_children(): a waitpid(-1, WNOHANG) loop.
"""

from __future__ import annotations

from ..fork import ForkModel


class NoReapModel(ForkModel):
    lesson = ("no-reap: exited children are never waited for; each connection leaves a "
              "zombie (<defunct> in ps) until fork() fails under ulimit -u")

    def reap_children(self) -> None:
        pass  # the bug: SIGCHLD arrives, nobody calls wait()
