"""Stop a run cleanly on Ctrl-C or SIGTERM (a scheduler's preemption): finish the current step, save a
checkpoint of it, exit. A second signal exits at once (the atomic checkpoint writes still never leave a
half-written checkpoint behind)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequests:
    """Context manager: while active, the first SIGINT/SIGTERM only sets :attr:`signal_number`."""

    def __init__(self, announce: Callable[[str], None]) -> None:
        self.announce = announce
        self.signal_number: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_number is not None

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.signal_number is not None:  # the second signal: stop now
            self._restore()
            raise KeyboardInterrupt(f"{signal.Signals(number).name} received twice")
        self.signal_number = number
        self.announce(f"{signal.Signals(number).name} received: finishing this step, then saving a checkpoint and "
                      "exiting (send it again to exit at once)")

    def _restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
            for number in SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()
