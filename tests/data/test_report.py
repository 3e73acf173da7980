"""SkipReport: counting, merging across ranks, summary."""
import pytest

from kaldi_avg.data import SkipReport


def test_counts_frames_and_first_examples():
    report = SkipReport(max_examples=2)
    for i in range(4):
        report.add("too_short", f"u{i}", frames=10)
    assert report.counts == {"too_short": 4} and report.frames == {"too_short": 40}
    assert report.examples["too_short"] == ["u0", "u1"]
    assert "too_short: 4 (40 frames" in report.summary() and "u0, u1, ..." in report.summary()
    assert SkipReport().summary() == "nothing skipped"
    with pytest.raises(ValueError, match="unknown skip reason"):
        report.add("typo", "u9")


def test_reports_of_ranks_merge_and_round_trip():
    a, b = SkipReport(), SkipReport()
    a.add("too_short", "a1", 5)
    b.add("too_short", "b1", 7)
    b.add("non_finite_features", "b2", 100)
    total = SkipReport.merged([a, b])
    assert total.counts == {"too_short": 2, "non_finite_features": 1}
    assert total.frames["too_short"] == 12 and total.examples["too_short"] == ["a1", "b1"]
    assert total.total() == 3 and total.total("too_short") == 2
    assert SkipReport.from_dict(total.to_dict()) == total
