"""`bench --long-audio 10,60`: does memory stay flat with audio length? One fresh server per length, one upload
of that many minutes of real speech (espeak-ng, pauses included) into verbose_json, and the server's peak resident
memory, wall time and real-time factor. The upload is a plain multipart POST (httpx, which the GPU image has), as
the OpenAI SDK sends it."""

import json
import logging
import sys
import time
from pathlib import Path

import httpx

from server.bench.http_load import ServerProcess, free_port
from server.bench.speech import flac, have_espeak, speech_track

logger = logging.getLogger(__name__)


def run_long_audio(model_dir: str, minutes: list[float], output_tokens: int, device: str, dtype: str,
                   out: Path) -> list[dict]:
    if not have_espeak():
        raise SystemExit("bench --long-audio needs espeak-ng (Debian/Ubuntu: apt install espeak-ng)")
    rows = []
    for length in minutes:
        samples, utterances = speech_track(length * 60, seed=int(length))
        audio = flac(samples)
        del samples
        with upload_server(model_dir, device, dtype, len(audio), out / f"long-audio-{length:g}min.log") as server:
            time.sleep(1.0)  # a memory sample of the idle server
            idle = server.peak_rss
            logger.info("long audio: %g min (%.1f MB of FLAC)", length, len(audio) / 1e6)
            started = time.perf_counter()
            response = httpx.post(f"{server.base_url}/v1/audio/transcriptions", timeout=3 * 3600,
                                  files={"file": ("speech.flac", audio)},
                                  data={"model": "bench", "response_format": "verbose_json",
                                        "max_tokens": str(output_tokens)})
            wall = time.perf_counter() - started
            result = response.raise_for_status().json()
            time.sleep(0.5)  # one more memory sample after the answer
            rows.append({"minutes": length, "upload_mb": round(len(audio) / 2**20, 1),
                         "duration_s": result["duration"], "utterances": len(utterances),
                         "segments": len(result["segments"]), "wall_s": round(wall, 1),
                         "rtfx": round(result["duration"] / wall, 1), "idle_rss_mb": round(idle / 2**20),
                         "peak_rss_mb": round(server.peak_rss / 2**20)})
        (out / "long_audio.json").write_text(json.dumps(rows, indent=2))  # after every length, kept if stopped later
        (out / "long_audio.md").write_text(table(rows))
    return rows


def upload_server(model_dir: str, device: str, dtype: str, upload_bytes: int, log: Path) -> ServerProcess:
    """A fresh server on a free port that takes an upload of `upload_bytes` (start it with `with`)."""
    port = free_port()
    command = [sys.executable, "-m", "server", "serve", "--model", model_dir, "--served-model-name", "bench",
               "--port", str(port), "--device", device, "--dtype", dtype, "--log-level", "warning",
               "--max-upload-mb", str(max(64, upload_bytes * 2 // 2**20))]
    return ServerProcess(command, f"http://127.0.0.1:{port}", "/ready", log)


def table(rows: list[dict]) -> str:
    lines = ["| audio | upload | segments | wall | RTFx | server RSS idle | server RSS peak |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['minutes']:g} min | {r['upload_mb']} MiB | {r['segments']} | {r['wall_s']} s | {r['rtfx']}x | "
              f"{r['idle_rss_mb']} MiB | {r['peak_rss_mb']} MiB |" for r in rows]
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        growth = (last["peak_rss_mb"] - last["idle_rss_mb"]) / max(1, first["peak_rss_mb"] - first["idle_rss_mb"])
        lines.append(f"\n{last['minutes']:g} min vs {first['minutes']:g} min: {last['minutes'] / first['minutes']:g}x the "
                     f"audio, peak RSS {last['peak_rss_mb'] / first['peak_rss_mb']:.2f}x "
                     f"(above idle: {growth:.2f}x)")
    return "\n".join(lines) + "\n"
