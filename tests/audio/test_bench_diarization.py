"""`bench --diarization` writes its accuracy table and the wall time diarized_json adds, through a real server, to
the transcription of the same file."""

import json
import subprocess
import sys

import pytest

from tests.support.speech import requires_espeak


@requires_espeak
@pytest.mark.slow
def test_bench_diarization_scores_every_conversation_and_times_a_file(tiny_model_dir, tmp_path):
    out = tmp_path / "diarization"
    run = subprocess.run(
        [sys.executable, "-m", "server", "bench", "--diarization", "--model", tiny_model_dir, "--diarization-minutes",
         "1", "--output-tokens", "4", "--device", "cpu", "--out", str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((out / "diarization.json").read_text())
    assert len(result["calibration"]) == 9 and len(result["held-out"]) == 6
    for row in result["calibration"] + result["held-out"]:
        assert row["found"] == row["speakers"] and row["anonymous"] >= 0.95 and row["known"] >= 0.95, row
    cost = result["cost"]
    assert cost["diarization_s"] > cost["vad_s"] > 0 and cost["turns"] > 0
    assert [r["chunking_strategy"] for r in cost["route"]] == ["auto", "server_vad"]
    for row in cost["route"]:
        assert len(row["verbose_json_s"]) == len(row["diarized_json_s"]) == 2 and min(row["diarized_json_s"]) > 0
        assert row["segments"][1] >= cost["turns"] // 2, row  # a segment per speaker turn, or fewer joined
    assert cost["route_accuracy"] >= 0.9, cost
    assert "held-out: anonymous mean" in (out / "diarization.md").read_text()
