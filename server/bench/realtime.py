"""`bench --realtime 1,4,8`: how many live transcription sessions the server sustains. Each level opens that many
concurrent `GET /v1/realtime?intent=transcription` sessions; each streams real speech (espeak-ng sentences with
pauses) as 24 kHz PCM16 in 100 ms appends at real-time pace, server VAD on, and times every utterance from its end of
speech to its first transcript delta and to its completed transcript.

End of speech is the wall time the client sent the last audio of the utterance (where the synthesized sentence
really ends; each `speech_stopped` is matched to the sentence nearest its `audio_end_ms`) plus the session's
`silence_duration_ms`: the moment the server had all the audio it needs to know the turn ended. So the figures are
the server's own delay (VAD, queueing, prefill, decoding), not the pause a speaker must make for server VAD.
"""

import asyncio
import base64
import json
import logging
import random
import statistics
import sys
import time
from pathlib import Path

import av
import numpy as np
import websockets

from server.bench.http_load import ServerProcess, free_port
from server.bench.speech import have_espeak, speech_track

logger = logging.getLogger(__name__)
RATE = 24_000
CHUNK_S = 0.1
CHUNK_BYTES = int(RATE * CHUNK_S) * 2
SILENCE_MS = 500
PAUSES = (1.0, 1.5, 0.8, 2.0)  # between utterances: each longer than SILENCE_MS, so each sentence is one turn
TARGET_P95_S = 1.0


def run_realtime(model_dir: str, levels: list[int], speech_seconds: float, output_tokens: int, device: str,
                 dtype: str, out: Path) -> dict:
    if not have_espeak():
        raise SystemExit("bench --realtime needs espeak-ng (Debian/Ubuntu: apt install espeak-ng)")
    samples, utterances = speech_track(speech_seconds, pauses=PAUSES)
    pcm = pcm24k(np.concatenate([samples, np.zeros(int(1.5 * 16_000), np.float32)]))  # the last turn ends too
    port = free_port()
    # A real transcript of one of these sentences is 10-15 tokens; the random-weight model rarely ends by itself, so
    # every turn's transcript is capped at --output-tokens (the bench's forced length elsewhere too).
    command = [sys.executable, "-m", "server", "serve", "--model", model_dir, "--served-model-name", "bench",
               "--port", str(port), "--device", device, "--dtype", dtype, "--log-level", "warning",
               "--max-batch-size", str(max(levels)), "--default-max-tokens", str(output_tokens)]
    meta = {"model": model_dir, "device": device, "speech_s_per_session": round(len(pcm) / 2 / RATE, 1),
            "utterances_per_session": len(utterances), "chunk_ms": int(CHUNK_S * 1000),
            "silence_duration_ms": SILENCE_MS, "output_tokens": output_tokens, "date": time.strftime("%Y-%m-%d %H:%M")}
    rows = []
    with ServerProcess(command, f"http://127.0.0.1:{port}", "/ready", out / "realtime-server.log") as server:
        for level in levels:
            logger.info("realtime: %d live sessions, %.0f s of speech each", level, len(pcm) / 2 / RATE)
            url = f"ws://127.0.0.1:{port}/v1/realtime?intent=transcription"
            sessions = asyncio.run(_level(url, pcm, [end for _, end in utterances], level))
            rows.append(_figures(level, sessions, server.peak_rss))
            summary = _write(out, meta, rows)  # after every level: a run stopped later keeps what it measured
    return summary


def _write(out: Path, meta: dict, rows: list[dict]) -> dict:
    fits = [r["sessions"] for r in rows if r["completed_p95_s"] is not None and r["completed_p95_s"] < TARGET_P95_S
            and not r["failed"]]
    summary = {"meta": meta, "results": rows, "max_sessions_p95_under_1s": max(fits, default=None)}
    (out / "realtime.json").write_text(json.dumps(summary, indent=2))
    (out / "realtime.md").write_text(table(summary))
    return summary


async def _level(url: str, pcm: bytes, ends: list[float], level: int) -> list[dict]:
    # Starts spread over one sentence, as independent speakers would be (all ending at once is the worst case).
    offsets = [i * 3.0 / level for i in range(level)]
    random.Random(level).shuffle(offsets)
    return await asyncio.gather(*(_session(url, pcm, ends, offset) for offset in offsets))


async def _session(url: str, pcm: bytes, ends: list[float], delay: float) -> dict:
    await asyncio.sleep(delay)
    turns: dict[str, dict] = {}  # item id -> its times
    errors: list[str] = []
    sent_at: list[float] = []  # wall time each chunk was sent
    lag = 0.0  # how far behind real time this client fell: large values would mean the figures measure the client
    async with websockets.connect(url, max_size=None, open_timeout=60) as ws:
        await _expect(ws, "session.created")
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": RATE},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": SILENCE_MS}}}}}))
        await _expect(ws, "session.updated")
        reader = asyncio.create_task(_read(ws, turns, errors))
        start = time.perf_counter()
        for i in range(0, len(pcm), CHUNK_BYTES):
            # chunk k holds [k, k+1) x 100 ms of audio: a microphone has it at the end of that span
            await asyncio.sleep(max(0.0, start + (len(sent_at) + 1) * CHUNK_S - time.perf_counter()))
            await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                      "audio": base64.b64encode(pcm[i : i + CHUNK_BYTES]).decode()}))
            sent_at.append(time.perf_counter())
            lag = max(lag, sent_at[-1] - start - len(sent_at) * CHUNK_S)
        deadline = time.perf_counter() + 120
        while time.perf_counter() < deadline and any("completed" not in t and "failed" not in t for t in turns.values()):
            await asyncio.sleep(0.05)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    for turn in turns.values():
        end = min(ends, key=lambda e: abs(e - turn["audio_end_ms"] / 1000))
        chunk = int((end + SILENCE_MS / 1000) / CHUNK_S)  # the chunk holding that moment
        turn["end_of_speech"] = sent_at[min(chunk, len(sent_at) - 1)]
    return {"turns": list(turns.values()), "errors": errors, "send_lag": lag}


async def _expect(ws, kind: str) -> None:
    event = json.loads(await asyncio.wait_for(ws.recv(), 60))
    if event["type"] != kind:
        raise RuntimeError(f"expected {kind}, the server sent {event}")


async def _read(ws, turns: dict[str, dict], errors: list[str]) -> None:
    async for raw in ws:
        now, event = time.perf_counter(), json.loads(raw)
        kind = event["type"]
        if kind == "input_audio_buffer.speech_stopped":
            turns[event["item_id"]] = {"audio_end_ms": event["audio_end_ms"], "stopped": now}
        elif kind == "conversation.item.input_audio_transcription.delta":
            turns[event["item_id"]].setdefault("first_delta", now)
        elif kind == "conversation.item.input_audio_transcription.completed":
            turns[event["item_id"]]["completed"] = now
        elif kind == "conversation.item.input_audio_transcription.failed":
            turns[event["item_id"]]["failed"] = now
            errors.append(event["error"]["message"])
        elif kind == "error":
            errors.append(event["error"]["message"])


def _figures(level: int, sessions: list[dict], peak_rss: int) -> dict:
    turns = [t for s in sessions for t in s["turns"]]
    done = [t for t in turns if "completed" in t]
    first = [t["first_delta"] - t["end_of_speech"] for t in done if "first_delta" in t]
    completed = [t["completed"] - t["end_of_speech"] for t in done]
    vad = [t["stopped"] - t["end_of_speech"] for t in turns]
    return {"sessions": level, "utterances": len(turns), "completed": len(done),
            "failed": len(turns) - len(done), "errors": sorted({e for s in sessions for e in s["errors"]})[:5],
            "first_delta_p50_s": _pct(first, 50), "first_delta_p95_s": _pct(first, 95),
            "completed_p50_s": _pct(completed, 50), "completed_p95_s": _pct(completed, 95),
            "speech_stopped_p50_s": _pct(vad, 50), "max_send_lag_s": round(max(s["send_lag"] for s in sessions), 3),
            "peak_rss_mb": round(peak_rss / 2**20)}


def _pct(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 3)
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 3)


def pcm24k(samples: np.ndarray) -> bytes:
    """16 kHz float32 -> 24 kHz 16-bit little-endian mono (audio/pcm), as a microphone client would send it."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    frame = av.AudioFrame.from_ndarray((np.clip(samples, -1, 1) * 32767).astype(np.int16).reshape(1, -1),
                                       format="s16", layout="mono")
    frame.sample_rate = 16_000
    out = [f.to_ndarray().reshape(-1) for f in [*resampler.resample(frame), *resampler.resample(None)]]
    return np.concatenate(out).astype("<i2").tobytes()


def table(summary: dict) -> str:
    def s(value: float | None) -> str:
        return "–" if value is None else f"{value * 1000:.0f} ms"

    meta = summary["meta"]
    lines = [f"Each session: {meta['speech_s_per_session']} s of speech ({meta['utterances_per_session']} utterances) in "
             f"{meta['chunk_ms']} ms appends at real-time pace, server VAD (silence_duration_ms "
             f"{meta['silence_duration_ms']}), transcripts capped at {meta['output_tokens']} tokens.\n",
             "| live sessions | utterances | end of speech → speech_stopped p50 | → first delta p50 / p95 | "
             "→ completed p50 / p95 | failed |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['sessions']} | {r['utterances']} | {s(r['speech_stopped_p50_s'])} | {s(r['first_delta_p50_s'])} / "
              f"{s(r['first_delta_p95_s'])} | {s(r['completed_p50_s'])} / {s(r['completed_p95_s'])} | {r['failed']} |"
              for r in summary["results"]]
    best = summary["max_sessions_p95_under_1s"]
    lines.append(f"\nMost live sessions with p95 (end of speech → completed) under 1 s: {best if best else 'none measured'}")
    return "\n".join(lines) + "\n"
