"""benchmarks/scale.py at a tiny size: the corpus it synthesises passes the driver's start-up checks
and every measurement lands in the JSON (the benchmark stopped once when the checks grew)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("kaldi_hmm_gmm", reason="kaldi-hmm-gmm builds the transition model and tree")

REPO = Path(__file__).resolve().parents[2]


def test_tiny_run_measures_everything(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "scale.py"), "--hours", "0.2", "--ranks", "1",
                           "--extra-runs", "0.2:2",
                           "--work-dir", str(tmp_path / "work"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (result,) = json.loads((tmp_path / "scale.json").read_text())["results"]
    one, two = result["train"]
    assert (one["ranks"], two["ranks"], two["backend"]) == (1, 2, "torch")
    for train in (one, two):
        assert train["startup_s"] > 0 and train["frames_per_s_per_rank"] > 0 and train["peak_rss_per_rank"] > 0
        assert len(train["startup_cpu_s_ranks"]) == train["ranks"] and train["startup_cpu_s_per_rank"] > 0
        assert 0 <= train["data_wait_share"] < 1
    assert {t["kind"] for t in result["targets"]} == {"build", "dict", "store"}
    assert result["kaldi_egs"]["written_bytes"] > 0
