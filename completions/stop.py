"""Stop sequences, applied by the gateway for providers that do not take them."""


def cut_at_stop(text, stops):
    """Return (text before the first stop sequence, whether one was found).

    The first is the one that ends first, as generation meets it, not the one that starts
    first: in " aa" with stops "a" and " aa", "a" is complete at " a" and wins. So the
    stream filter, which sees the text as it comes, agrees with this however the text was
    cut into deltas.
    """
    found = [(i + len(s), i) for s, i in ((s, text.find(s)) for s in stops) if i >= 0]
    if not found:
        return text, False
    return text[: min(found)[1]], True


class StopFilter:
    """Pass streamed text through, ending it before the first stop sequence.

    Text that could be the start of a stop sequence split across two deltas is held back
    until the next delta tells whether it is one.
    """

    def __init__(self, stops):
        self.stops = stops
        self.pending = ""
        self.stopped = False

    def feed(self, text):
        """Return the part of text that is safe to send now."""
        if self.stopped:
            return ""
        self.pending += text
        before, self.stopped = cut_at_stop(self.pending, self.stops)
        if self.stopped:
            self.pending = ""
            return before
        held = self._held_back_length()
        ready = self.pending[: len(self.pending) - held]
        self.pending = self.pending[len(ready) :]
        return ready

    def flush(self):
        """Return what is still held back, once the stream has ended."""
        rest, self.pending = ("" if self.stopped else self.pending), ""
        return rest

    def _held_back_length(self):
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(self.pending)), longest, -1):
                if self.pending.endswith(stop[:size]):
                    longest = size
                    break
        return longest
