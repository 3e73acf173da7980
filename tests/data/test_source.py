"""Screening and loading checks: skips are counted, inconsistencies raise naming the utterance."""
from dataclasses import replace

import numpy as np
import pytest

from kaldi_avg.data import ChunkConfig, DataError, SkipReport, load_utterance, screen_utterances

from .synthetic import make_source, utterance_targets

CONFIG = ChunkConfig((20,), 4, 0)


def test_screening_counts_each_reason():
    lengths = {"ok": 50, "short": 19, "noali": 50, "long_ali": 50, "short_ali": 50, "off": 50}
    targets = {"ok": utterance_targets(0, 50), "short": utterance_targets(0, 19),
               "long_ali": utterance_targets(0, 51), "short_ali": utterance_targets(0, 48),
               "off": utterance_targets(0, 40)}
    source = make_source(lengths, targets=targets)
    report = SkipReport()
    usable = screen_utterances(source, CONFIG, report=report)
    assert usable == {"ok": 50, "long_ali": 50, "short_ali": 50}
    assert report.counts == {"too_short": 1, "missing_targets": 1, "target_length_mismatch": 1,
                             "targets_padded": 1}
    assert report.examples["target_length_mismatch"] == ["off"]
    assert report.frames["targets_padded"] == 2


def test_non_finite_features_are_skipped_and_counted():
    bad = np.zeros((30, 3), np.float32)
    bad[4, 1] = np.nan
    source = make_source({"a": 30, "b": 30}, features={"b": bad})
    report = SkipReport()
    assert load_utterance(source, "a", report) is not None
    assert load_utterance(source, "b", report) is None
    assert report.counts == {"non_finite_features": 1}
    assert report.examples["non_finite_features"] == ["b"]


@pytest.mark.parametrize("features, match", [
    (np.zeros((30, 4), np.float32), "dimension 4, expected 3"),
    (np.zeros((29, 3), np.float32), "says 30 frames"),
])
def test_inconsistent_features_raise_naming_the_utterance(features, match):
    source = make_source({"spk1-u7": 30}, features={"spk1-u7": features})
    with pytest.raises(DataError, match=match) as error:
        load_utterance(source, "spk1-u7", SkipReport())
    assert "spk1-u7" in str(error.value)


def test_pdf_out_of_range_raises():
    source = make_source({"u": 30}, targets={"u": np.full(30, 50)})
    with pytest.raises(DataError, match="'u'.*outside"):
        load_utterance(source, "u", SkipReport())


def test_ivector_problems_are_skipped():
    source = make_source({"a": 100, "b": 400}, ivector_dim=2, ivector_period=10)
    report = SkipReport()
    assert load_utterance(source, "a", report).ivectors.shape == (10, 2)
    missing = replace(make_source({"a": 100}, ivector_dim=2), load_ivector={}.__getitem__)
    assert load_utterance(missing, "a", report) is None
    short = replace(make_source({"a": 300}, ivector_dim=2),
                    load_ivector=lambda utt: np.zeros((10, 2), np.float32))
    assert load_utterance(short, "a", report) is None  # 10 rows x 10 covers 100 of 300 frames
    assert report.counts == {"missing_ivector": 1, "ivector_length_mismatch": 1}
