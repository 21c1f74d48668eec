"""The one backoff of every loop that polls (watch of batches, of a job, `watch --all`)."""

import time
from collections.abc import Callable

# While nothing moves, each pause is this much longer than the last, up to the maximum.
GROWTH = 1.5


class Backoff:
    """Pauses between polling rounds: `interval` after a round in which something moved,
    growing by half each round in which nothing did, up to `max_interval`."""

    def __init__(
        self,
        interval: float,
        max_interval: float,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.interval = interval
        self.max_interval = max_interval
        self.pause = interval
        # None: time.sleep, looked up at each pause (a test may replace it).
        self._sleep = sleep

    def wait(self, moved: bool) -> float:
        """Sleep after a round; returns the pause taken."""
        self.pause = self.interval if moved else min(self.pause * GROWTH, self.max_interval)
        (self._sleep or time.sleep)(self.pause)
        return self.pause
