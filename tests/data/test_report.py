"""SkipReport: counting once per (reason, key), merging across ranks, summaries, round trip."""
import json

import pytest

from kaldi_avg.data import SkipReport


def test_counts_frames_and_first_examples():
    report = SkipReport(max_examples=2)
    for i in range(4):
        assert report.add("too_short", f"u{i}", frames=10)
    assert report.counts == {"too_short": 4} and report.frames == {"too_short": 40}
    assert report.examples["too_short"] == ["u0", "u1"]
    assert "too_short: 4 (40 frames" in report.summary() and "u0, u1, ..." in report.summary()
    assert SkipReport().summary() == "nothing skipped"
    assert SkipReport().one_line() == "nothing skipped"
    with pytest.raises(ValueError, match="unknown skip reason"):
        report.add("typo", "u9")


def test_an_utterance_met_every_epoch_is_counted_once():
    report = SkipReport()
    for _ in range(3):  # three epochs load the same NaN utterance
        report.add("non_finite_features", "spk1-u7", 300)
    assert not report.add("non_finite_features", "spk1-u7", 300)
    assert report.counts == {"non_finite_features": 1} and report.frames == {"non_finite_features": 300}
    report.add("missing_targets", "spk1-u7", 300)  # another reason counts separately
    assert report.total() == 2


def test_reports_of_ranks_merge_without_double_counting():
    a, b = SkipReport(), SkipReport()
    a.add("too_short", "a1", 5)
    b.add("too_short", "b1", 7)
    b.add("non_finite_features", "b2", 100)
    a.add("non_finite_features", "b2", 100)  # both ranks loaded the same bad utterance
    total = SkipReport.merged([a, b])
    assert total.counts == {"too_short": 2, "non_finite_features": 1}
    assert total.frames["too_short"] == 12 and total.examples["too_short"] == ["a1", "b1"]
    assert total.total() == 3 and total.total("too_short") == 2
    assert SkipReport.merged([total, a, b]) == total


def test_round_trip_through_json_continues_counting():
    """The driver carries the report across --stage resume (e.g. in checkpoint.pt or JSON)."""
    report = SkipReport()
    report.add("partial_minibatch", "u1-0", 20)
    report.add("unreadable", "u2", 50)
    restored = SkipReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert restored == report
    restored.add("unreadable", "u2", 50)  # met again after the resume
    restored.add("non_finite_output", "u3-40", 20)
    assert restored.counts == {"partial_minibatch": 1, "unreadable": 1, "non_finite_output": 1}


def test_one_line_gives_counts_with_reasons():
    report = SkipReport()
    report.add("missing_targets", "u1", 10)
    report.add("missing_targets", "u2", 10)
    report.add("non_finite_features", "u3", 10)
    assert report.one_line() == "skipped 3 utterances: 2 no alignment, 1 non-finite features"
    report.add("partial_minibatch", "u4-0", 20)
    report.add("targets_padded", "u5", 1)
    assert report.one_line() == ("skipped 3 utterances: 2 no alignment, 1 non-finite features; "
                                 "skipped 1 chunk: 1 left after the last full minibatch; "
                                 "kept 1 utterance: 1 alignment a few frames short (padded)")
