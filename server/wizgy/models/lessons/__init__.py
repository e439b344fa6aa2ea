"""Part 3's bugs, put back on purpose: `--lesson NAME` (env WIZGY_LESSON), fork model only.

Each lesson is models/fork.py's ForkModel with one method overridden, so the fix is
the difference between that method here and there:

    keep-duplicate-fds   close_parent_copy()  the parent keeps its copy of each client socket
    no-reap              reap_children()      nobody waits for exited children: zombies
    reap-once            reap_children()      one wait() per SIGCHLD: signals merge, zombies

The labs (server/labs/) walk through each one.
"""

from __future__ import annotations

from importlib import import_module

LESSONS = {
    "keep-duplicate-fds": "keep_duplicate_fds:KeepDuplicateFdsModel",
    "no-reap": "no_reap:NoReapModel",
    "reap-once": "reap_once:ReapOnceModel",
}


def get(name: str):
    """The model class of a lesson."""
    module, _, cls = LESSONS[name].partition(":")
    return getattr(import_module(f"{__name__}.{module}"), cls)
