"""Give freed heap memory back to the operating system now and then (glibc's malloc_trim), so the server's
resident memory follows what it really holds.

Activations and KV caches of ever-changing batch shapes leave holes in glibc's heap that it does not return by
itself: after a burst of work an idle server would keep its peak RSS for good, and a long transcription's peak
climbs with its length. A trim takes 15 to 45 ms (measured after prefills of 16 x 5 s and 8 x 30 s clips, small
preset), too long to pay after every step, so the engine trims once 20 times its last cost of work has passed
(at most 5% of its time) and once it has been idle for a second. Measured with `bench --long-audio 10,60`
(small preset): peak RSS 1831 and 2680 MiB trimming only every 10 s, 2130 and 2187 MiB trimming after every
prefill. Pinning glibc's mmap threshold low instead (an earlier fix: every big buffer mmapped and returned when
freed) keeps RSS closest to what is live, but makes every tensor allocation a system call plus fresh page faults,
and a CPU prefill 2.8x slower.
"""

import ctypes
import time


class HeapTrimmer:
    SHARE = 20  # work between trims, in multiples of the last trim's cost

    def __init__(self) -> None:
        self.dirty = False  # work was done since the last trim
        self._cost = 0.01  # seconds the last trim took
        self._last = time.monotonic()
        try:
            self._malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc: nothing to do
            self._malloc_trim = None

    def worked(self) -> None:
        self.dirty = self._malloc_trim is not None

    def due(self) -> bool:
        return self.dirty and time.monotonic() - self._last >= self.SHARE * self._cost

    def trim(self) -> None:
        """Return every whole free page of the heap to the system (malloc_trim(0))."""
        started = time.monotonic()
        if self._malloc_trim is not None:
            self._malloc_trim(0)
        self._last = time.monotonic()
        self.dirty, self._cost = False, self._last - started
