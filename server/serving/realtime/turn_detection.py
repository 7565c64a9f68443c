"""The session's input audio buffer and, with server VAD, where each turn starts and ends in it.

Turn detection is the transcriptions' own (server.audio.chunking.SpeechSpans over Silero VAD run block by block),
one utterance per span: an utterance ends after `silence_duration_ms` of pause, keeps `prefix_padding_ms` before
it, and speech that runs on for 30 s is cut at its quietest moment near the limit and goes on as the next turn.
Positions are 16 kHz samples counted from the session's first appended sample.
"""

from dataclasses import dataclass

import numpy as np

from server.audio.chunking import SampleBlocks, SpeechSpans, VadOptions
from server.audio.clip import SAMPLE_RATE
from server.audio.vad import SpeechDetector
from server.protocol.realtime import ServerVad


def ms(samples: int) -> int:
    return samples * 1000 // SAMPLE_RATE


class InputBuffer(SampleBlocks):
    """The session's appended audio (held from `start`), uncommitted from `committed` to `end`."""

    def __init__(self) -> None:
        super().__init__()
        self.committed = 0

    @property
    def uncommitted(self) -> int:
        return self.end - self.committed

    def append(self, samples: np.ndarray) -> None:
        if samples.size:
            super().append(samples)

    def take(self, start: int, end: int) -> np.ndarray:
        """The samples [start, end) (those still held); everything before `end` leaves the buffer."""
        samples = self.slice(start, end)
        self.drop_before(end)
        self.committed = max(self.committed, end)
        return samples


@dataclass
class SpeechStarted:
    start: int  # first sample of the turn, its padding included


@dataclass
class SpeechStopped:
    start: int
    end: int  # the turn's end, with the padding kept after speech


@dataclass
class IdleTimeout:
    start: int
    end: int


class TurnDetector:
    """Server VAD over the audio as it is appended: speech started / stopped, in order."""

    def __init__(self, detector: SpeechDetector, vad: ServerVad, origin: int) -> None:
        self.options = VadOptions(threshold=vad.threshold, silence_ms=vad.silence_duration_ms,
                                  padding_ms=vad.prefix_padding_ms, merge=False)
        self.stream = detector.stream()
        self.spans = SpeechSpans(self.options)
        self.origin = origin  # the sample this detector's first frame stands at
        self.idle_samples = vad.idle_timeout_ms * SAMPLE_RATE // 1000 if vad.idle_timeout_ms else None
        self.started: int | None = None  # start of the turn speech_started was sent for
        self.quiet_since = origin  # end of the last turn: where an idle timeout's audio starts

    @property
    def keep_from(self) -> int:
        """The earliest sample a turn still to come may start at."""
        return self.origin + self.spans.keep_from

    def feed(self, samples: np.ndarray, end: int) -> list[SpeechStarted | SpeechStopped | IdleTimeout]:
        events: list[SpeechStarted | SpeechStopped | IdleTimeout] = []
        for span in self.spans.feed(*self.stream.feed(samples)):
            start = self.origin + span.start
            if self.started is None:  # the whole turn came in one append
                events.append(SpeechStarted(start))
            self.started = None
            events.append(SpeechStopped(start, self.origin + span.end))
            self.quiet_since = self.origin + span.end
        spans = self.spans
        region = spans.region
        if self.started is None and region is not None and spans.silence == 0 \
                and spans.frame - region >= self.options.frames(self.options.min_speech_ms):
            self.started = self.keep_from  # speech long enough that this turn will be kept
            events.append(SpeechStarted(self.started))
        if self.idle_samples and self.started is None and region is None and end - self.quiet_since >= self.idle_samples:
            events.append(IdleTimeout(self.quiet_since, end))
            self.quiet_since = end
        return events
