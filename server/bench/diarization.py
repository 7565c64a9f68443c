"""`bench --diarization`: who-spoke-when accuracy on synthetic conversations, and what diarization costs.

Accuracy: the share of speech time given the right speaker (server.bench.speaker_score) on the conversations the
thresholds were calibrated on and on held-out ones (voices and seeds calibration never saw), anonymous and with
known speakers (references for all voices but the last, which must keep a letter). Cost: one conversation of
`--diarization-minutes`, first diarized in this process alone (its VAD timed apart), then sent to one fresh server
through the OpenAI SDK as verbose_json and as diarized_json (chunking_strategy auto), in turn, ROUNDS times each:
what diarized_json adds to the wall time of the same file's transcription, end to end through the HTTP route.
"""

import json
import logging
import time
from pathlib import Path

from openai import OpenAI

from server.audio.diarization.diarize import DiarizationOptions, Diarizer, SpeakerTurn
from server.audio.diarization.encoder import SpeakerEncoder
from server.audio.vad import SpeechDetector
from server.bench.conversation import (
    CALIBRATION_SCENES,
    HELD_OUT_SCENES,
    HELD_OUT_VOICES,
    Conversation,
    Scene,
)
from server.bench.long_audio import upload_server
from server.bench.speaker_score import speaker_accuracy
from server.bench.speech import flac, have_espeak

logger = logging.getLogger(__name__)
COST_SEED = 9100


def new_diarizer(options: DiarizationOptions | None = None) -> Diarizer:
    return Diarizer(SpeechDetector(), SpeakerEncoder(), options or DiarizationOptions())


def truth(conversation: Conversation) -> list[tuple[float, float, str]]:
    return [(t.start, t.end, t.speaker) for t in conversation.turns]


def said(turns: list[SpeakerTurn]) -> list[tuple[float, float, str]]:
    return [(t.start_seconds, t.end_seconds, t.speaker) for t in turns]


def score_scene(diarizer: Diarizer, scene: Scene) -> dict:
    """One conversation diarized anonymously and with known speakers (all voices but the last)."""
    conversation = scene.render()
    regions = diarizer.regions(conversation.samples)
    anonymous = diarizer.turns(regions)
    references = scene.references(max(1, len(scene.voices) - 1))
    known = [diarizer.known_speaker(i, name, samples) for i, (name, samples) in enumerate(references)]
    named = diarizer.turns(regions, known)
    return {"speakers": len(scene.voices), "seed": scene.seed, "seconds": round(conversation.samples.shape[0] / 16000),
            "found": len({t.speaker for t in anonymous}),
            "anonymous": speaker_accuracy(truth(conversation), said(anonymous)),
            "known": speaker_accuracy(truth(conversation), said(named), known=[k.name for k in known]),
            "named": sorted({t.speaker for t in named} & {k.name for k in known})}


def run_accuracy(diarizer: Diarizer) -> dict[str, list[dict]]:
    results = {}
    for name, scenes in (("calibration", CALIBRATION_SCENES), ("held-out", HELD_OUT_SCENES)):
        results[name] = []
        for scene in scenes:
            results[name].append(score_scene(diarizer, scene))
            logger.info("%s %s", name, results[name][-1])
    return results


def run_cost(diarizer: Diarizer, minutes: float, model_dir: str | None, output_tokens: int, device: str, dtype: str,
             out: Path) -> dict:
    """Wall times on one `minutes`-long conversation: the VAD and all of diarization in this process, and (with a
    model) a server's verbose_json and diarized_json of it."""
    conversation = Scene(HELD_OUT_VOICES, COST_SEED, minutes * 60).render()
    samples = conversation.samples
    started = time.perf_counter()
    diarizer.detector.frames(samples)
    vad = time.perf_counter() - started
    started = time.perf_counter()
    turns = diarizer.diarize(samples)
    wall = time.perf_counter() - started
    row = {"minutes": minutes, "speech_s": round(sum(e - s for s, e, _ in truth(conversation))),
           "turns": len(turns), "accuracy": speaker_accuracy(truth(conversation), said(turns)),
           "diarization_s": round(wall, 2), "vad_s": round(vad, 2)}
    if model_dir:
        row |= _through_route(flac(samples), conversation, model_dir, output_tokens, device, dtype, out)
    return row


ROUNDS = 2  # each request this many times, in turn, so a slow spell of a shared machine hits all alike
STRATEGIES = {"auto": "auto", "server_vad": {"type": "server_vad"}}
FORMATS = ("verbose_json", "diarized_json")


def _through_route(audio: bytes, conversation: Conversation, model_dir: str, output_tokens: int, device: str,
                   dtype: str, out: Path) -> dict:
    """verbose_json and diarized_json of the same upload on one server, in turn, under each chunking strategy: with
    `auto` verbose_json cuts few long clips and diarized_json one speaker's turns (more, shorter clips); with
    `server_vad` both cut a clip per utterance, so what differs is diarization. Each figure is the least of its
    rounds (the run least slowed by other work); `added` compares them. The last diarized answer is scored too."""
    times = {(strategy, fmt): [] for strategy in STRATEGIES for fmt in FORMATS}
    segments: dict[str, int] = {}
    with upload_server(model_dir, device, dtype, len(audio), out / "diarization-transcription.log") as server:
        client = OpenAI(base_url=f"{server.base_url}/v1", api_key="none", timeout=3 * 3600, max_retries=0)
        for _ in range(ROUNDS):
            for strategy, fmt in times:
                started = time.perf_counter()
                result = client.audio.transcriptions.create(
                    model="bench", file=("speech.flac", audio), response_format=fmt,
                    chunking_strategy=STRATEGIES[strategy], extra_body={"max_tokens": output_tokens})
                times[strategy, fmt].append(round(time.perf_counter() - started, 2))
                segments[f"{strategy} {fmt}"] = len(result.segments)
                logger.info("%s %s: %.1f s, %d segments", strategy, fmt, times[strategy, fmt][-1], len(result.segments))
    labelled = [(x.start, x.end, x.speaker) for x in result.segments]  # the last diarized_json answer
    return {"route": [{"chunking_strategy": strategy, "verbose_json_s": times[strategy, "verbose_json"],
                       "diarized_json_s": times[strategy, "diarized_json"],
                       "segments": [segments[f"{strategy} {fmt}"] for fmt in FORMATS],
                       "added": round(min(times[strategy, "diarized_json"]) / min(times[strategy, "verbose_json"]) - 1, 3)}
                      for strategy in STRATEGIES],
            "route_accuracy": speaker_accuracy(truth(conversation), labelled)}


def run_diarization(model_dir: str | None, minutes: float, output_tokens: int, device: str, dtype: str,
                    out: Path) -> str:
    if not have_espeak():
        raise SystemExit("bench --diarization needs espeak-ng (Debian/Ubuntu: apt install espeak-ng)")
    diarizer = new_diarizer()
    results = {"options": {"merge": diarizer.options.merge, "match": diarizer.options.match},
               **run_accuracy(diarizer), "cost": run_cost(diarizer, minutes, model_dir, output_tokens, device, dtype, out)}
    (out / "diarization.json").write_text(json.dumps(results, indent=2))
    report = table(results)
    (out / "diarization.md").write_text(report)
    return report


def table(results: dict) -> str:
    lines = ["| set | speakers | seed | length | speakers found | anonymous | known speakers (named) |",
             "|---|---|---|---|---|---|---|"]
    for name in ("calibration", "held-out"):
        for r in results[name]:
            lines.append(f"| {name} | {r['speakers']} | {r['seed']} | {r['seconds']} s | {r['found']} | "
                         f"{r['anonymous']:.1%} | {r['known']:.1%} ({len(r['named'])} of {max(1, r['speakers'] - 1)}) |")
    for name in ("calibration", "held-out"):
        rows = results[name]
        lines.append(f"\n{name}: anonymous mean {_mean(rows, 'anonymous'):.1%} (lowest {_low(rows, 'anonymous'):.1%}), "
                     f"known speakers mean {_mean(rows, 'known'):.1%} (lowest {_low(rows, 'known'):.1%})")
    cost = results["cost"]
    lines.append(f"\n{cost['minutes']:g} min conversation ({cost['speech_s']} s of speech): diarization alone "
                 f"{cost['diarization_s']} s (its VAD {cost['vad_s']} s), accuracy {cost['accuracy']:.1%}")
    if "route" in cost:
        lines += ["", "| chunking_strategy | verbose_json | diarized_json | segments | diarized_json adds |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['chunking_strategy']} | {' / '.join(f'{t} s' for t in r['verbose_json_s'])} | "
                  f"{' / '.join(f'{t} s' for t in r['diarized_json_s'])} | {r['segments'][0]} / {r['segments'][1]} | "
                  f"{r['added']:.0%} |" for r in cost["route"]]
        lines.append(f"\nthrough the server, the diarized segments' speakers score {cost['route_accuracy']:.1%}")
    return "\n".join(lines) + "\n"


def _mean(rows: list[dict], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


def _low(rows: list[dict], key: str) -> float:
    return min(r[key] for r in rows)
