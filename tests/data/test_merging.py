"""nnet3-merge-egs minibatch-size rules and grouping."""
import pytest

from kaldi_avg.data import MinibatchSizeRule, halve_minibatch_size, merge_into_minibatches


def merge(items, text):
    return merge_into_minibatches(items, MinibatchSizeRule.parse(text),
                                  structure=lambda item: item[0], eg_size=lambda item: item[1])


def sizes(minibatches):
    return [len(m) for m in minibatches]


def test_full_minibatches_then_smaller_allowed_size_then_discard():
    items = [("a", 60, i) for i in range(200)]
    minibatches, discarded = merge(items, "128,64")
    assert sizes(minibatches) == [128, 64]
    assert discarded == items[192:]
    assert [x for m in minibatches for x in m] == items[:192]  # order kept


def test_single_size_discards_the_remainder():
    minibatches, discarded = merge([("a", 60, i) for i in range(250)], "100")
    assert sizes(minibatches) == [100, 100] and len(discarded) == 50


def test_range_keeps_everything():
    minibatches, discarded = merge([("a", 60, i) for i in range(150)], "1:64")
    assert sizes(minibatches) == [64, 64, 22] and discarded == []


def test_only_equal_structures_merge_and_full_groups_are_written_when_reached():
    items = [("a" if i % 3 else "b", 60, i) for i in range(30)]
    minibatches, discarded = merge(items, "4:8")
    assert all(len({x[0] for x in m}) == 1 for m in minibatches)
    # "a" has 20 items (two full 8s written as they fill, 4 flushed), "b" 10 (one 8, 2 discarded)
    assert [(m[0][0], len(m)) for m in minibatches] == [("a", 8), ("b", 8), ("a", 8), ("a", 4)]
    assert [x[2] for x in discarded] == [24, 27]


def test_rule_per_example_size_uses_the_closest():
    rule = MinibatchSizeRule.parse("64=32/256=16")
    assert rule.size_for(70, 100, input_ended=False) == 32
    assert rule.size_for(200, 100, input_ended=False) == 16
    assert rule.size_for(70, 31, input_ended=False) == 0
    assert rule.size_for(70, 31, input_ended=True) == 0
    assert MinibatchSizeRule.parse("128=64:128,256").size_for(100, 200, input_ended=True) == 128


@pytest.mark.parametrize("text", ["", "0", "64,abc", "32:16", "64=32/16", "64=32/64=16", "a=3",
                                  "1:2:3"])
def test_bad_rules_are_rejected(text):
    with pytest.raises(ValueError, match="minibatch-size"):
        MinibatchSizeRule.parse(text)


@pytest.mark.parametrize("text, halved", [("128,64", "64,32"), ("100", "50"), ("1:64", "1:32"),
                                          ("1", "1"),
                                          ("256=64:128/512=32", "256=32:64/512=16")])
def test_halving_for_iteration_zero(text, halved):
    assert halve_minibatch_size(text) == halved
