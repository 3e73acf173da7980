"""split_utterance against hand-worked UtteranceSplitter cases, and its invariants."""
import random

import pytest

from kaldi_avg.data import ChunkConfig, chunks_for_utterance, parse_chunk_widths, split_utterance

# left 40 / right 2 in the middle of an utterance, 10 / 0 at its ends
CONFIG_20 = ChunkConfig((20,), left_context=40, right_context=2, left_context_initial=10,
                        right_context_final=0)


def layout(chunks):
    return [(c.first_frame, c.width) for c in chunks]


def test_exactly_one_chunk_width_gives_one_chunk_with_initial_and_final_context():
    (chunk,) = split_utterance(20, CONFIG_20)
    assert (chunk.first_frame, chunk.width) == (0, 20)
    assert (chunk.left_context, chunk.right_context) == (10, 0)
    assert chunk.weights == (1.0,) * 20
    assert chunk.input_start == -10 and chunk.input_length == 30


def test_shorter_than_every_width_gives_no_chunk():
    assert split_utterance(19, CONFIG_20) == []
    assert split_utterance(0, CONFIG_20) == []
    # an alternative width shorter than the principal one still fits
    assert layout(split_utterance(20, ChunkConfig((40, 20), 0, 0))) == [(0, 20)]


def test_gap_is_spread_before_and_after_the_chunk():
    # 25 frames: one chunk (cost 2*5=10) beats two (cost 40-25=15 >= 10 + 1.9999);
    # the 5 spare frames split 3/2 around it
    assert layout(split_utterance(25, CONFIG_20)) == [(3, 20)]
    starts = {split_utterance(25, CONFIG_20, random.Random(seed))[0].first_frame
              for seed in range(40)}
    assert starts == {2, 3}


def test_overlap_gets_half_weights():
    # 30 frames: two chunks (cost 10) beat one (cost 20); they overlap by 10 frames
    first, second = split_utterance(30, CONFIG_20)
    assert layout([first, second]) == [(0, 20), (10, 20)]
    assert first.weights == (1.0,) * 10 + (0.5,) * 10
    assert second.weights == (0.5,) * 10 + (1.0,) * 10
    assert (first.left_context, first.right_context) == (10, 2)
    assert (second.left_context, second.right_context) == (40, 0)


def test_overlaps_split_between_junctions_leftover_to_the_first():
    # 50 frames = three chunks overlapping by 10 in total: 5 + 5
    assert layout(split_utterance(50, CONFIG_20)) == [(0, 20), (15, 20), (30, 20)]
    # 51 frames: 9 frames of overlap; shares 4 + 4 and Kaldi's truncated fractions send the
    # leftover frame to the first junction
    chunks = split_utterance(51, CONFIG_20)
    assert layout(chunks) == [(0, 20), (15, 20), (31, 20)]
    middle = chunks[1]
    assert (middle.left_context, middle.right_context) == (40, 2)
    assert middle.weights == (0.5,) * 5 + (1.0,) * 11 + (0.5,) * 4


def test_long_utterance_sheds_principal_chunks():
    # 100 > 2*20 + 20: two principal chunks are set aside, 60 frames split as 3 x 20
    assert layout(split_utterance(100, CONFIG_20)) == [(t, 20) for t in range(0, 100, 20)]


def test_several_chunk_widths():
    config = ChunkConfig((40, 30, 20), left_context=5, right_context=2)
    # 50 frames: only 20+30 fits exactly (cost 0); no overlap, no gap
    assert layout(split_utterance(50, config)) == [(0, 20), (20, 30)]
    # 45 frames: 20+30 (cost 5) beats 40 alone and 20+20 (cost 10); 5 frames overlap
    chunks = split_utterance(45, config)
    assert layout(chunks) == [(0, 20), (15, 30)]
    assert chunks[0].weights[-5:] == (0.5,) * 5 and chunks[1].weights[:5] == (0.5,) * 5
    # random draws: either order of the two widths
    layouts = {tuple(layout(split_utterance(45, config, random.Random(s)))) for s in range(40)}
    assert layouts == {((0, 20), (15, 30)), ((0, 30), (25, 20))}
    # 40 frames: 40 and 20+20 both fit exactly, so both are drawn
    layouts = {tuple(layout(split_utterance(40, config, random.Random(s)))) for s in range(40)}
    assert layouts == {((0, 40),), ((0, 20), (20, 20))}


@pytest.mark.parametrize("widths", [(20,), (40, 30, 20), (17, 50)])
def test_invariants_over_many_lengths(widths):
    config = ChunkConfig(widths, left_context=7, right_context=3, left_context_initial=0,
                         right_context_final=1)
    rng = random.Random(0)
    for num_frames in range(1, 250):
        chunks = split_utterance(num_frames, config, rng)
        if num_frames < min(widths):
            assert chunks == []
            continue
        assert chunks, num_frames
        assert all(0 <= c.first_frame and c.first_frame + c.width <= num_frames for c in chunks)
        assert all(c.width in widths for c in chunks)
        assert sum(c.width != widths[0] for c in chunks) <= 2
        assert chunks[0].left_context == 0 and chunks[-1].right_context == 1
        assert all(c.left_context == 7 for c in chunks[1:])
        assert all(c.right_context == 3 for c in chunks[:-1])
        total = [0.0] * num_frames
        for c in chunks:
            assert max(0, c.input_start) <= c.ivector_frame
            assert c.ivector_frame < min(num_frames, c.first_frame + c.width + c.right_context)
            for k, w in enumerate(c.weights):
                total[c.first_frame + k] += w
        assert all(t == pytest.approx(1.0) or t == 0.0 for t in total)


def test_chunks_for_utterance_is_a_pure_function_of_srand_and_id():
    config = ChunkConfig((20,), 4, 0)
    a = chunks_for_utterance("utt1", 137, config, srand=3)
    assert a == chunks_for_utterance("utt1", 137, config, srand=3)
    variants = {tuple(chunks_for_utterance(f"u{i}", 137, config, srand=3)) for i in range(10)}
    assert len(variants) > 1


def test_from_egs_options_adds_model_context_like_train_rnn():
    config = ChunkConfig.from_egs_options("40,30", model_left_context=12, model_right_context=3,
                                          chunk_left_context=40, chunk_right_context=0,
                                          chunk_left_context_initial=0,
                                          chunk_right_context_final=-1)
    assert config == ChunkConfig((40, 30), 52, 3, 12, -1)
    assert config.principal_width == 40 and config.min_width == 30
    # "same as left context" when the initial context is not given
    (only,) = split_utterance(40, config)
    assert (only.left_context, only.right_context) == (12, 3)


@pytest.mark.parametrize("text", ["", "20,", "a", "0", "20,-5"])
def test_bad_chunk_width_is_rejected(text):
    with pytest.raises(ValueError, match="chunk width"):
        parse_chunk_widths(text)
