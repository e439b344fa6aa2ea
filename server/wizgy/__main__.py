"""`python -m wizgy`, and the `wizgy` command (run). The handlers for the start go in
before wizgy's other modules import (about 60 ms on CPython, 110 ms on PyPy, during
which a stop signal to wizgy as PID 1 was lost, and a HUP or USR1 killed it): only the
interpreter's own startup is left uncovered. `wizgy top` keeps the default actions."""

import sys

from . import starting


def run() -> int:
    if sys.argv[1:2] == ["top"]:
        from .cli import main
        return main()
    try:
        starting.install()
        from .cli import main
        return main()  # (a stop once main() runs: main() ends the start itself)
    except starting.StoppedWhileStarting:
        starting.hold_stop_signals()
        print(starting.STOPPED_LINE, file=sys.stderr)
        return 0


if __name__ == "__main__":
    sys.exit(run())
