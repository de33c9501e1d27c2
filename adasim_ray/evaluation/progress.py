"""Progress lines for long evaluations: feature extraction, the k-NN votes, the linear protocol.

A :class:`Progress` is a ``progress(done, total)`` callback that prints one line at most every
``every_s`` seconds, with the rate and the time left, and a last line when the work ends if it
printed any before: quick work stays silent, work of minutes says where it is.
"""

from __future__ import annotations

import time


def clock(seconds: float) -> str:
    """``M:SS``, or ``H:MM:SS`` from an hour on.

    Examples:
        >>> clock(75), clock(3725.4)
        ('1:15', '1:02:05')
    """
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """``progress(done, total)``: ``[prefix] what: done/total unit, R unit/s, eta M:SS``."""

    def __init__(self, what: str, *, unit: str = "images", prefix: str = "[eval]",
                 every_s: float = 10.0) -> None:
        self.what, self.unit, self.prefix, self.every_s = what, unit, prefix, every_s
        self.start = self.last = time.perf_counter()
        self.printed = 0

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        finished = done >= total
        if not (now - self.last >= self.every_s or (finished and self.printed)):
            return
        self.last = now
        self.printed += 1
        elapsed = max(now - self.start, 1e-9)
        rate = done / elapsed
        tail = (f"done in {clock(elapsed)}" if finished
                else f"eta {clock((total - done) / max(rate, 1e-9))}")
        print(f"{self.prefix} {self.what}: {done}/{total} {self.unit}, {rate:.0f} "
              f"{self.unit}/s, {tail}", flush=True)
