"""The server's signals while it starts, before a model has its own handlers: from the
first line `python -m wizgy` runs (__main__.py, before wizgy's other modules import),
then cli.main(), until Model.install_signals. A stop signal (TERM, INT, QUIT) ends the
start with a clean exit; an operator's signal (HUP, USR1, USR2, TTIN, TTOU) is held
and handed to the model. Imports nothing of wizgy: it must load in no time."""

from __future__ import annotations

import os
import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
# What an operator asks of a running server: reload (HUP), reopen the logs (USR1), a
# worker more or fewer (TTIN, TTOU), an upgrade (USR2). By default they end a process
# (HUP, USR1, USR2) or suspend it (TTIN, TTOU): every model handles them, and while the
# server starts they are held for the model (hold_for_the_model).
SERVING_SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTTIN,
                   signal.SIGTTOU)
STARTING_SIGNALS = (*STOP_SIGNALS, *SERVING_SIGNALS)
STOPPED_LINE = "wizgy: stopped while starting: a stop signal came before the server served"


def install() -> None:
    """The handlers for the start; unblocks the signals (tune_gc blocks them across its
    exec). A stop that came already and whose exception something dropped (a __del__
    it ran in) ends the start here, not lost under a fresh handler."""
    if _stopped:
        raise StoppedWhileStarting
    for signum in STOP_SIGNALS:
        signal.signal(signum, stop_booting)
    for signum in SERVING_SIGNALS:
        signal.signal(signum, hold_for_the_model)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STARTING_SIGNALS)


class StoppedWhileStarting(KeyboardInterrupt):
    """What stop_booting raises: caught as a KeyboardInterrupt. Not that class itself:
    CPython marks a KeyboardInterrupt (exactly that class) that leaves exec()'d source
    as unhandled, and then ends the interpreter by SIGINT (status 130) whatever main()
    returned; dataclasses and namedtuple exec() the methods they build, and importing
    Flask or Django builds dozens of them."""


_stopped = []  # stop_booting ran: its later calls do nothing


def stop_booting(signum, frame) -> None:
    """A stop signal before a model has installed its own handlers (the server
    starting: its app importing, say; a worker booting): leave now, as an exception
    the caller turns into a clean exit (status 0). Recording it instead would lose it:
    nobody reads the record yet. Nor can the default action be left to it: where
    wizgy is PID 1 (a plain `docker run`), the kernel drops a TERM or QUIT its init has
    no handler for, and `docker stop` would wait out its timeout, then kill.

    The first one stops the start; more would cut its cleanup short, so they are
    ignored from here (SIG_IGN, in C: cli.main also reads it as "a stop came"). Blocked
    while the handlers change: one arriving between Python's check for signals and the
    change would be reported on stderr as "ignored due to race condition"; a blocked one
    is discarded by SIG_IGN. Unblocked after: were this exception dropped, the model's
    own handlers must hear the next. Those that came before the block run this again,
    nested in pthread_sigmask: they return."""
    if _stopped:
        return
    _stopped.append(signum)
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    for stop in STOP_SIGNALS:
        signal.signal(stop, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    raise StoppedWhileStarting


_held: list[int] = []  # SERVING_SIGNALS that came while the server started


def hold_for_the_model(signum, frame) -> None:
    """One of SERVING_SIGNALS before the model's handlers are in (a logrotate's USR1
    while the app imports would kill it): kept for them, once, as the kernel keeps a
    pending signal (a storm of HUPs is one reload)."""
    if signum not in _held:
        _held.append(signum)


def pass_held_signals() -> None:
    """The model's handlers are in: each signal held while it started, to them."""
    while _held:
        signal.raise_signal(_held.pop(0))


def resend_held_signals() -> None:
    """Before an exec, with SERVING_SIGNALS blocked: what was held goes pending, to be
    held again by the new program (pending signals survive execve; handlers do not)."""
    while _held:
        os.kill(os.getpid(), _held.pop(0))


def stopping(signum, frame) -> None:
    """A stop signal while the server stops already: nothing more to do."""


def hold_stop_signals() -> None:
    """Stopping now: a further stop signal (a storm of them, Ctrl-C pressed again)
    would only cut the cleanup short (a traceback, the pid file left), or kill the
    interpreter once it has put the default action back on its way out: blocked until
    the exit, then a no-op (blocked first: none can come between). A HUP or USR1
    then would kill it as Python puts the default actions back: blocked too."""
    signal.pthread_sigmask(signal.SIG_BLOCK, (*STOP_SIGNALS, *SERVING_SIGNALS))
    for signum in STOP_SIGNALS:
        signal.signal(signum, stopping)
