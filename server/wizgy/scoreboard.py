"""Counters shared by a server's processes: one slot per process in shared memory.

The parent (fork model) or master (prefork) creates the board before it forks, so
every child inherits the same anonymous shared mapping. The parent `claim()`s a slot
for a child before forking it; the child counts into its own slot (no locks: nobody
else writes there); after reaping the child the parent `release()`s the slot, which
folds its counters into slot 0, the totals of processes that have ended.

    board = Scoreboard(slots=workers)
    slot = board.claim()                  # parent, before fork()
    ctx.stats = board.stats(slot)         # child, after fork(): same API as Stats
    board.release(slot)                   # parent, after waitpid() returned the child
    board.totals()                        # anyone: counters summed over all slots
"""

from __future__ import annotations

import mmap
import sys
from struct import pack_into, unpack_from

COUNTERS = ("requests_total", "responses_4xx", "responses_5xx", "connections_total",
            "emfile_events", "fork_failures")
GAUGES = ("active", "idle", "pid", "heartbeat")
FIELDS = COUNTERS + GAUGES
WIDTH = len(FIELDS)


class SlotStats:
    """A process's counters, living in its scoreboard slot. Same attributes as Stats."""

    __slots__ = ("_mv", "_base")

    def __init__(self, board_map: mmap.mmap, mv: memoryview, base: int) -> None:
        # (board_map: what PackedSlotStats reads and writes; this form uses the view)
        self._mv = mv
        self._base = base

    def count(self, status: int) -> None:
        mv, base = self._mv, self._base
        mv[base] += 1  # requests_total
        if status >= 500:
            mv[base + 2] += 1
        elif status >= 400:
            mv[base + 1] += 1

    def as_dict(self) -> dict:
        return {name: self._mv[self._base + i] for i, name in enumerate(FIELDS)}


class PackedSlotStats(SlotStats):
    """SlotStats for PyPy: reads and writes the slot with struct on the mapping.

    One runtime, one form, each measured (server/docs/pypy-jit.md, candidate 3):
    PyPy's JIT does not compile an item of a cast memoryview (a count() takes
    1,651 instructions, 170-200 ns) but does compile pack_into/unpack_from (82, about
    1 ns); on CPython struct costs about 1,000 instructions more a count() than the
    memoryview (3,138-3,366 against 2,141), so CPython keeps SlotStats.
    """

    __slots__ = ("_map", "_offset")

    def __init__(self, board_map: mmap.mmap, mv: memoryview, base: int) -> None:
        super().__init__(board_map, mv, base)
        self._map = board_map
        self._offset = 8 * base

    def count(self, status: int) -> None:
        board_map, offset = self._map, self._offset
        pack_into("q", board_map, offset, unpack_from("q", board_map, offset)[0] + 1)
        if status >= 500:
            offset += 16  # responses_5xx
        elif status >= 400:
            offset += 8  # responses_4xx
        else:
            return
        pack_into("q", board_map, offset, unpack_from("q", board_map, offset)[0] + 1)


def _field(index: int) -> property:
    def get(self):
        return self._mv[self._base + index]

    def set(self, value):
        self._mv[self._base + index] = value

    return property(get, set)


def _packed_field(index: int) -> property:
    def get(self):
        return unpack_from("q", self._map, self._offset + 8 * index)[0]

    def set(self, value):
        pack_into("q", self._map, self._offset + 8 * index, value)

    return property(get, set)


for _i, _name in enumerate(FIELDS):
    setattr(SlotStats, _name, _field(_i))
    setattr(PackedSlotStats, _name, _packed_field(_i))

# The slot's form for this runtime (see PackedSlotStats)
SLOT_STATS = PackedSlotStats if sys.implementation.name == "pypy" else SlotStats


class Scoreboard:
    def __init__(self, slots: int) -> None:
        self.size = slots + 1  # slot 0: what ended processes counted
        self._map = mmap.mmap(-1, 8 * WIDTH * self.size)
        self._mv = memoryview(self._map).cast("q")
        self._free = list(range(self.size - 1, 0, -1))

    def claim(self) -> int | None:
        """A free slot for a new process, or None when all are taken."""
        return self._free.pop() if self._free else None

    def stats(self, slot: int) -> SlotStats:
        return SLOT_STATS(self._map, self._mv, slot * WIDTH)

    def release(self, slot: int) -> None:
        mv, base = self._mv, slot * WIDTH
        for i in range(len(COUNTERS)):
            mv[i] += mv[base + i]
        mv[base:base + WIDTH] = memoryview(bytes(8 * WIDTH)).cast("q")
        self._free.append(slot)

    def totals(self) -> dict:
        mv = self._mv
        out = {name: 0 for name in COUNTERS + ("active", "idle")}
        for slot in range(self.size):
            base = slot * WIDTH
            for i, name in enumerate(COUNTERS + ("active", "idle")):
                out[name] += mv[base + i]
        return out

    def live(self) -> list[dict]:
        """The slots of running processes (those that recorded a pid)."""
        return [s for slot in range(1, self.size)
                if (s := self.stats(slot).as_dict())["pid"]]
