"""Process titles that say which server runs: `ps` in the container shows

    wizgy: master [prefork]
    wizgy: worker 2 [gthread 4 threads]
    wizgy: status

The whole title replaces the command line (what `ps -o args` and `/proc/PID/cmdline`
show) when the optional setproctitle package is installed (`pip install
wizgy[proctitle]`, as the container image does). Whether it is or not, the short
process name (`/proc/PID/comm`, what `top` and `ps -o comm` show, 15 bytes at most)
becomes e.g. `wizgy worker 2`. Linux only; elsewhere, and on failure, nothing changes.
"""

from __future__ import annotations

try:
    from setproctitle import setproctitle
except ImportError:  # the standard library only: the short name below still changes
    setproctitle = None

COMM_LENGTH = 15  # TASK_COMM_LEN less the terminating NUL


def describe(settings) -> str:
    """What a worker (or a one-process server) runs: `gthread 4 threads`, `sync`,
    `evloop`, `fork, lesson reap-once`, `threaded 8 threads`, `iterative`."""
    threads = settings.worker_threads
    if settings.main_model == "prefork":
        kind = "gthread" if threads > 1 else "sync" if settings.model != "evloop" else "evloop"
    else:
        kind = settings.model
    if threads > 1:
        kind += f" {threads} threads"
    if settings.lesson:
        kind += f", lesson {settings.lesson}"
    return kind


def set_title(role: str, what: str = "") -> None:
    """`wizgy: ROLE [WHAT]` as the command line (with setproctitle), and `wizgy ROLE`
    as the process name."""
    if setproctitle is not None:
        setproctitle(f"wizgy: {role} [{what}]" if what else f"wizgy: {role}")
    try:
        with open("/proc/self/comm", "w") as comm:
            comm.write(f"wizgy {role}"[:COMM_LENGTH])
    except OSError:
        pass  # not Linux, or /proc is not mounted
