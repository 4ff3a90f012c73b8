"""What a clock's timer hands its callback when it fires.

A msgspec struct, kept apart from :mod:`keel.core.clock`, which is compiled
(see :mod:`keel.compiled_modules`); that module re-exports it.
"""

from __future__ import annotations

import msgspec


class TimeEvent(msgspec.Struct, frozen=True):
    """A timer fired: ``name`` is the timer's, ``ts`` the scheduled time (ns).

    A frozen msgspec struct: one is built per firing, and its constructor is
    a few times cheaper than a frozen dataclass's.
    """

    name: str
    ts: int
