"""What Python 3.9 spells differently (PyPy 7.3.11, Debian 12's pypy3, implements 3.9).

One place, so that it can go when 3.9 does. Nothing here costs anything on 3.10+.
"""

from __future__ import annotations

import socket

# A socket operation that times out raises socket.timeout: TimeoutError itself since
# Python 3.10, an OSError of its own before, which `except TimeoutError` misses.
# `except TIMEOUT` catches it on both (and the TimeoutError wizgy raises itself); on
# 3.10+ the tuple holds the same class twice. Evaluated only when an exception is.
TIMEOUT = (TimeoutError, socket.timeout)
