"""benchmarks/gpu_check.sh's CPU dry run: every check runs at tiny sizes and the JSON says CUDA is absent."""
import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_dry_run_writes_every_check(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["cuda"] is None and report["dry_run"] and report["device"] == "cpu"
    for check in ("unit_tests", "training", "prefetch", "natural_gradient", "lstm_throughput"):
        assert "error" not in report[check], report[check]
    assert report["training"]["iterations"] > 0 and report["training"]["frames_per_s"] > 0
    assert 0.0 <= report["prefetch"]["data_wait_share"] < 1.0
    assert report["natural_gradient"]["agrees"]
    assert report["lstm_throughput"]["kaldi_avg_lstmp_frames_per_s"] > 0
