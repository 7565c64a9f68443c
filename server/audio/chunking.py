"""Cut audio into clips the encoder takes whole (it sees at most 30 s), at pauses a voice-activity detector finds.

- Transcriptions (`SpeechSpans`, `SpeechClips`): speech regions, padded, then merged while they fit in 30 s
  (`auto`) or kept one per utterance (`server_vad`). The silence between them never reaches the model, and their
  times in the original audio are the segments' timestamps. Speech with no pause for 30 s is cut at its quietest
  moment near the limit. It runs as the audio is decoded, holding only what a future clip may still need.
- Chat (`contiguous_spans`): all of the audio, cut at the quietest moment of the last pause before each 30 s limit
  (of the last 10 s when there is none): nothing is dropped, since the question may be about the music or the silence.
"""

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from server.audio.clip import MAX_CLIP_SAMPLES, SAMPLE_RATE
from server.audio.vad import FRAME, SpeechDetector

QUIET_SEARCH_SECONDS = 5.0  # where speech runs on past the limit, look this far back for its quietest moment
CHAT_MIN_CLIP_SECONDS = 20.0  # chat clips are cut at the last pause after this
NEGATIVE_MARGIN = 0.15  # speech ends when the probability falls this far below the threshold (Silero's own rule)


@dataclass(frozen=True)
class VadOptions:
    threshold: float = 0.5
    """Speech probability at which speech starts."""
    silence_ms: int = 300
    """A pause at least this long ends an utterance (and is where clips may be cut)."""
    padding_ms: int = 200
    """Audio kept before each utterance (and, up to half the pause, after it)."""
    merge: bool = True
    """Merge consecutive utterances into clips of up to 30 s (auto); False: one clip per utterance (server_vad)."""
    min_speech_ms: int = 250
    """Shorter blips of 'speech' are noise."""

    def frames(self, ms: int) -> int:
        return max(1, round(ms / 1000 * SAMPLE_RATE / FRAME)) if ms else 0


@dataclass
class Span:
    """A stretch of the original audio, in samples; `speech` is the highest speech probability inside it."""

    start: int
    end: int
    speech: float


class SpeechSpans:
    """Turns per-frame speech probabilities, fed in any blocks, into finished spans in order."""

    def __init__(self, options: VadOptions) -> None:
        self.o = options
        self.negative = max(0.0, options.threshold - NEGATIVE_MARGIN)
        self.min_silence = max(1, options.frames(options.silence_ms))
        self.pad = options.frames(options.padding_ms)
        self.end_pad = min(self.pad, self.min_silence // 2)  # never reaches into the next utterance's padding
        self.max_region = MAX_CLIP_SAMPLES // FRAME - 2 * self.pad  # a region plus its padding fits a clip
        self.frame = 0  # frames seen so far
        self.region: int | None = None  # first frame of the utterance in progress
        self.region_peak = 0.0
        self.silence = 0  # frames of pause inside the utterance in progress
        self.region_forced = False  # the utterance in progress continues one cut at its quietest moment
        self.levels: deque[tuple[int, float]] = deque()  # (frame, level) of the last QUIET_SEARCH_SECONDS
        self.last_end = 0  # end of the last span, in frames: the next one's padding stops there
        self.pending: Span | None = None  # merged span that may still grow
        self.out: list[Span] = []

    @property
    def keep_from(self) -> int:
        """The earliest sample a span still to come may start at."""
        if self.pending is not None:
            return self.pending.start
        start = self.region if self.region is not None else self.frame
        return max(0, start - self.pad, self.last_end) * FRAME

    def feed(self, probs: np.ndarray, levels: np.ndarray) -> list[Span]:
        window = round(QUIET_SEARCH_SECONDS * SAMPLE_RATE / FRAME)
        for prob, level in zip(probs.tolist(), levels.tolist()):
            frame = self.frame
            self.frame += 1
            self.levels.append((frame, level))
            if len(self.levels) > window:
                self.levels.popleft()
            if self.region is None:
                if prob >= self.o.threshold:
                    self.region, self.region_peak, self.silence, self.region_forced = frame, prob, 0, False
            else:
                self.region_peak = max(self.region_peak, prob)
                if prob >= self.o.threshold:
                    self.silence = 0
                elif prob < self.negative or self.silence:
                    self.silence += 1
                if self.silence >= self.min_silence:
                    self._finish_region(frame + 1 - self.silence)
                elif frame + 1 - self.region >= self.max_region:
                    self._cut_region_at_quietest()
            if self.pending is not None and frame * FRAME - self.pending.start >= MAX_CLIP_SAMPLES:
                self._emit(self.pending)  # no later utterance can join it any more
                self.pending = None
        out, self.out = self.out, []
        return out

    def finish(self, total_samples: int) -> list[Span]:
        """Spans still open when the audio ends."""
        if self.region is not None:
            self._finish_region(self.frame - self.silence)
        if self.pending is not None:
            self._emit(self.pending)
            self.pending = None
        out, self.out = self.out, []
        for span in out:
            span.end = min(span.end, total_samples)
        return [s for s in out if s.end > s.start]

    def _finish_region(self, end: int) -> None:
        start, forced = self.region, self.region_forced
        self.region = None
        if not forced and end - start < self.o.frames(self.o.min_speech_ms):
            return
        padded_start = start if forced else max(self.last_end, start - self.pad)
        self._add(Span(padded_start * FRAME, (end + self.end_pad) * FRAME, self.region_peak))
        self.last_end = end + self.end_pad

    def _cut_region_at_quietest(self) -> None:
        """Speech ran on for a whole clip: cut at the quietest moment of the last few seconds and go on."""
        frames = np.array([f for f, _ in self.levels if f > self.region])
        levels = np.array([v for f, v in self.levels if f > self.region])
        cut = int(frames[_quietest(levels)])
        start, forced, peak = self.region, self.region_forced, self.region_peak
        padded_start = start if forced else max(self.last_end, start - self.pad)
        self._add(Span(padded_start * FRAME, cut * FRAME, peak))
        self.last_end = cut
        self.region, self.region_forced, self.silence = cut, True, 0

    def _add(self, span: Span) -> None:
        if not self.o.merge:
            self._emit(span)
        elif self.pending is not None and span.end - self.pending.start <= MAX_CLIP_SAMPLES:
            self.pending = Span(self.pending.start, span.end, max(self.pending.speech, span.speech))
        else:
            if self.pending is not None:
                self._emit(self.pending)
            self.pending = span

    def _emit(self, span: Span) -> None:
        self.out.append(span)


@dataclass
class Clip:
    """What the model hears (`samples`) and the stretch of the original audio it stands for (`span`)."""

    span: Span
    samples: np.ndarray


class SpeechClips:
    """Decoded blocks in, clips out in order as soon as each is final; memory stays a few clips' worth.

    `options` None means OpenAI's "no chunking strategy": audio that fits one clip goes to the model whole, its
    segment spanning the speech in it; longer audio is cut as `auto` would. `samples` counts what was decoded.
    """

    def __init__(self, blocks: Iterator[np.ndarray], detector: SpeechDetector, options: VadOptions | None) -> None:
        self.blocks = blocks
        self.detector = detector
        self.options = options
        self.samples = 0

    def __iter__(self) -> Iterator[Clip]:
        whole = self.options is None
        spans = SpeechSpans(self.options or VadOptions())
        vad = self.detector.stream()
        buffer = SampleBlocks()
        held: list[Span] = []
        for block in self.blocks:
            buffer.append(block)
            self.samples = buffer.end
            held += spans.feed(*vad.feed(block))
            whole = whole and buffer.end <= MAX_CLIP_SAMPLES  # too long to go whole: cut at pauses after all
            if not whole:
                yield from (Clip(s, buffer.slice(s.start, s.end)) for s in held)
                held = []
                buffer.drop_before(spans.keep_from)
        held += spans.feed(*vad.flush()) + spans.finish(buffer.end)
        if whole:
            speech = Span(held[0].start, held[-1].end, max(s.speech for s in held)) if held else Span(0, buffer.end, 0.0)
            yield Clip(speech, buffer.slice(0, buffer.end))
        else:
            yield from (Clip(s, buffer.slice(s.start, s.end)) for s in held)


def contiguous_spans(samples: np.ndarray, detector: SpeechDetector, options: VadOptions = VadOptions()) -> list[Span]:
    """All of the audio in clips of at most 30 s, each cut in the last pause before its limit."""
    if samples.shape[0] <= MAX_CLIP_SAMPLES:
        return [Span(0, samples.shape[0], 1.0)]
    probs, levels = detector.frames(samples)
    silent = probs < max(0.0, options.threshold - NEGATIVE_MARGIN)
    min_silence = max(1, options.frames(options.silence_ms))
    limit = MAX_CLIP_SAMPLES // FRAME
    earliest = round(CHAT_MIN_CLIP_SECONDS * SAMPLE_RATE / FRAME)
    cuts, pos = [0], 0
    while samples.shape[0] - pos * FRAME > MAX_CLIP_SAMPLES:
        lo, hi = pos + earliest, pos + limit
        pause = _last_run(silent[lo:hi], min_silence)
        first, last = pause if pause is not None else (0, hi - lo)
        pos = lo + first + _quietest(levels[lo + first : lo + last])
        cuts.append(pos)
    bounds = [c * FRAME for c in cuts] + [samples.shape[0]]
    return [Span(a, b, float(probs[a // FRAME : -(-b // FRAME)].max(initial=0.0))) for a, b in zip(bounds, bounds[1:])]


def _quietest(levels: np.ndarray) -> int:
    """Index of the quietest moment (levels averaged over 3 frames, so not one odd frame); the latest of ties."""
    smooth = np.convolve(np.pad(levels, 1, mode="edge"), np.ones(3) / 3, mode="valid")
    return smooth.shape[0] - 1 - int(np.argmin(smooth[::-1]))


def _last_run(flags: np.ndarray, min_len: int) -> tuple[int, int] | None:
    """[first, last) of the last run of at least `min_len` true flags, if any."""
    end = None
    for i in range(flags.shape[0] - 1, -1, -1):
        if flags[i] and end is None:
            end = i + 1
        if end is not None and (not flags[i] or i == 0):
            first = i + 1 if not flags[i] else i
            if end - first >= min_len:
                return first, end
            end = None
    return None


class SampleBlocks:
    """Decoded audio from sample `start` to `end`, held as the blocks it came in (no copying as it grows); also
    the realtime API's input buffer (server.serving.realtime.turn_detection)."""

    def __init__(self) -> None:
        self.blocks: deque[np.ndarray] = deque()
        self.start = 0  # sample index of the first block's first sample
        self.end = 0

    def append(self, block: np.ndarray) -> None:
        self.blocks.append(block)
        self.end += block.shape[0]

    def drop_before(self, sample: int) -> None:
        while self.blocks and self.start + self.blocks[0].shape[0] <= sample:
            self.start += self.blocks.popleft().shape[0]

    def slice(self, start: int, end: int) -> np.ndarray:
        parts, offset = [], self.start
        for block in self.blocks:
            lo, hi = max(start, offset), min(end, offset + block.shape[0])
            if lo < hi:
                parts.append(block[lo - offset : hi - offset])
            offset += block.shape[0]
            if offset >= end:
                break
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)
