"""`bench --realtime`: live transcription sessions streaming real speech at real-time pace, timed per utterance."""

import json
import subprocess
import sys

from tests.support.speech import requires_espeak


@requires_espeak
def test_bench_realtime_times_every_utterance_of_concurrent_sessions(tiny_model_dir, tmp_path):
    out = tmp_path / "realtime"
    run = subprocess.run(
        [sys.executable, "-m", "server", "bench", "--realtime", "2", "--model", tiny_model_dir, "--clip-seconds", "8",
         "--output-tokens", "8", "--device", "cpu", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((out / "realtime.json").read_text())
    meta = summary["meta"]
    assert meta["utterances_per_session"] >= 2 and meta["speech_s_per_session"] >= 8 and meta["output_tokens"] == 8
    (row,) = summary["results"]
    assert row["sessions"] == 2 and not row["errors"], row
    # every sentence of both sessions was found by the server's VAD and transcribed
    assert row["completed"] == row["utterances"] >= 2 * meta["utterances_per_session"] and row["failed"] == 0, row
    for name in ("first_delta", "completed"):
        assert 0 < row[f"{name}_p50_s"] <= row[f"{name}_p95_s"], row
    assert row["first_delta_p50_s"] <= row["completed_p50_s"] and row["peak_rss_mb"] > 0 and row["max_send_lag_s"] >= 0
    assert summary["max_sessions_p95_under_1s"] in (None, 2)
    table = (out / "realtime.md").read_text()
    assert table.startswith("Each session: ") and "\n| live sessions |" in table and "\n| 2 | " in table
    assert "Most live sessions" in table
