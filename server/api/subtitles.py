"""SRT and WebVTT bodies from timed segments (segments without text make no cue)."""

import re
from collections.abc import Iterable


def _timestamp(seconds: float, separator: str) -> str:
    millis = round(max(seconds, 0.0) * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_srt(segments: Iterable[tuple[float, float, str]]) -> str:
    cues = [
        f"{i}\n{_timestamp(start, ',')} --> {_timestamp(end, ',')}\n{text.strip()}\n"
        for i, (start, end, text) in enumerate(_spoken(segments), start=1)
    ]
    return "\n".join(cues)


def to_vtt(segments: Iterable[tuple[float, float, str]]) -> str:
    cues = [f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n{text.strip()}\n" for start, end, text in _spoken(segments)]
    return "WEBVTT\n\n" + "\n".join(cues)


def _spoken(segments: Iterable[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Cues with text, without blank lines inside (a blank line ends a cue in both formats)."""
    cues = [(start, end, re.sub(r"\n\s*\n", "\n", text.strip())) for start, end, text in segments]
    return [(start, end, text.replace("-->", "->")) for start, end, text in cues if text]
