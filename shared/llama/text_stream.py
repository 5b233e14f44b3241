"""Turns generated token bytes into text deltas: whole UTF-8 characters only, and stop sequences cut out."""

from __future__ import annotations

import codecs


class TextStream:
    """Accumulates token bytes and releases text that can no longer change.

    Text that could still be the start of a stop sequence is held back until it is known not to be one, so a
    stop sequence never leaks into the output, even partly.
    """

    def __init__(self, stop: tuple[str, ...] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = tuple(s for s in stop if s)
        self._text = ""  # the context's tail, then everything decoded so far (including held-back text)
        self._start = 0  # where the output starts in `_text` (after the context's tail)
        self._released = 0  # length of the prefix of `_text` already released
        self.stopped = False

    @property
    def text(self) -> str:
        """All text released so far."""
        return self._text[self._start : self._released]

    @property
    def inside_character(self) -> bool:
        """Whether the last bytes pushed end inside a UTF-8 character (its remaining bytes are still to come)."""
        return bool(self._decoder.getstate()[0])

    def seed(self, context: str) -> None:
        """Sets the text the output continues (e.g. the teacher's guidance); only before any output. A stop sequence
        may begin in it and end in the output; the context itself is never released."""
        if len(self._text) > self._start:
            raise RuntimeError("the context of a text stream is set before its output")
        longest = max((len(s) for s in self._stop), default=0)
        tail = context[-(longest - 1) :] if longest > 1 else ""
        self._text, self._start, self._released = tail, len(tail), len(tail)

    def push(self, data: bytes) -> str:
        """Adds one token's bytes; returns the newly released text (maybe empty). Sets `stopped` on a stop match."""
        if self.stopped:
            return ""
        self._text += self._decoder.decode(data)
        # A stop sequence can only start inside the unreleased tail (or just before it).
        search_from = max(0, self._released - max((len(s) for s in self._stop), default=0))
        hits = [i for s in self._stop if (i := self._text.find(s, search_from)) >= 0]
        if hits:  # a match that began in the context ends the output where it stood
            self._text = self._text[: max(min(hits), self._start)]
            self.stopped = True
            return self._release(len(self._text))
        return self._release(len(self._text) - self._held_back_length())

    def flush(self) -> str:
        """Releases everything still held back (the generation ended without a stop match)."""
        if not self.stopped:
            self._text += self._decoder.decode(b"", final=True)
        return self._release(len(self._text))

    def _held_back_length(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of some stop sequence."""
        longest = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(self._text)), longest, -1):
                if self._text.endswith(stop[:size]):
                    longest = size
                    break
        return longest

    def _release(self, upto: int) -> str:
        upto = max(upto, self._released)
        delta = self._text[self._released : upto]
        self._released = upto
        return delta
