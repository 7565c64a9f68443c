"""Token ids -> text deltas that never split a character and never leak a stop string."""

from collections.abc import Callable

REPLACEMENT_CHAR = "\ufffd"


class IncrementalDetokenizer:
    """Decodes each request's tokens once, as they arrive.

    Byte-level BPE tokens can end in the middle of a UTF-8 character; such text decodes with a trailing U+FFFD
    and is held back until the next token completes it. Text that could be the start of a stop string is held
    back too, so a stream never shows what the final answer cuts off.
    """

    def __init__(self, decode: Callable[[list[int]], str], stop: list[str]) -> None:
        self._decode = decode
        self._stop = [s for s in stop if s]
        self._ids: list[int] = []
        self._settled = 0  # ids before this index are part of `_text`
        self._text = ""  # all text decoded so far
        self._emitted = 0  # chars of `_text` already handed out
        self.stopped = False

    @property
    def text(self) -> str:
        return self._text[: self._emitted]

    def push(self, token_id: int) -> str:
        """Add one token; return the text that is now safe to show."""
        self._ids.append(token_id)
        pending = self._decode(self._ids[self._settled :])
        if pending.endswith(REPLACEMENT_CHAR):
            return ""
        self._settled = len(self._ids)
        self._text += pending
        return self._release(final=False)

    def flush(self) -> str:
        """The request ended: release what was held back (an unfinished character included)."""
        if self._settled < len(self._ids):
            self._text += self._decode(self._ids[self._settled :])
            self._settled = len(self._ids)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        end = len(self._text)
        for stop in self._stop:
            hit = self._text.find(stop, max(0, self._emitted - len(stop) + 1))
            if hit != -1 and hit < end:
                end, self.stopped = hit, True
        if not self.stopped and not final:
            end -= self._partial_stop_suffix()
        delta = self._text[self._emitted : end] if end > self._emitted else ""
        self._emitted = max(self._emitted, end)
        if self.stopped:
            self._text = self._text[: self._emitted]
        return delta

    def _partial_stop_suffix(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of a stop string."""
        best = 0
        for stop in self._stop:
            for n in range(min(len(stop) - 1, len(self._text)), best, -1):
                if self._text.endswith(stop[:n]):
                    best = n
                    break
        return best
