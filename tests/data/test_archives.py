"""Archive count, frame balance, held-out sets and the job -> archive map."""
import pytest

from kaldi_avg.data import ArchivePlan, archive_for_job, num_archives, plan_archives, select_heldout

from .synthetic import corpus_lengths


def test_num_archives_matches_get_egs():
    assert num_archives(1_000_000, 20, 20_000) == 3
    assert num_archives(800_000, 20, 20_000) == 3  # the "+1" also applies to exact multiples
    assert num_archives(10, 20, 20_000) == 1


def test_archive_for_job_is_kaldis_formula_zero_based():
    for archives_processed in range(12):
        for job in range(4):
            kaldi_archive = ((archives_processed + (job + 1) - 1) % 5) + 1  # 1-based both
            assert archive_for_job(job, archives_processed, 5) == kaldi_archive - 1
    assert [archive_for_job(j, 7, 5) for j in range(3)] == [2, 3, 4]
    with pytest.raises(ValueError):
        archive_for_job(0, 0, 0)


def test_archives_are_balanced_by_frames_and_cover_training_once():
    lengths = corpus_lengths(400, seed=1, low=50, high=1000)
    plan = plan_archives(lengths, samples_per_iter=100, principal_chunk_width=20,
                         num_utts_subset=30)
    assert plan.num_archives == num_archives(sum(lengths.values()), 20, 100)
    assert plan.num_frames == sum(lengths.values())
    frames = [sum(lengths[u] for u in archive) for archive in plan.archives]
    assert max(frames) - min(frames) <= max(lengths.values())
    training = [u for archive in plan.archives for u in archive]
    assert sorted(training) == sorted(set(lengths) - set(plan.valid_utts))
    assert len(plan.valid_utts) == 30 and len(plan.train_subset_utts) == 30
    assert set(plan.train_subset_utts) <= set(training)


def test_plan_is_deterministic_and_depends_on_srand():
    lengths = corpus_lengths(200, seed=2)
    kwargs = dict(samples_per_iter=50, principal_chunk_width=20, num_utts_subset=10)
    plan = plan_archives(lengths, srand=4, **kwargs)
    shuffled = dict(reversed(list(lengths.items())))
    assert plan_archives(shuffled, srand=4, **kwargs) == plan
    assert plan_archives(lengths, srand=5, **kwargs) != plan
    assert ArchivePlan.from_dict(plan.to_dict()) == plan


def test_tiny_corpus_holds_out_little_and_caps_archives():
    lengths = {f"u{i}": 100 for i in range(5)}
    plan = plan_archives(lengths, samples_per_iter=1, principal_chunk_width=20)
    assert len(plan.valid_utts) == 1
    assert plan.num_archives == 4  # 26 by the formula, but only 4 training utterances
    assert all(len(archive) == 1 for archive in plan.archives)
    single = plan_archives({"only": 50}, samples_per_iter=10, principal_chunk_width=20)
    assert single.valid_utts == () and single.archives == (("only",),)


def test_heldout_is_capped_at_a_fraction_of_the_corpus():
    utts = [f"u{i:03d}" for i in range(100)]
    valid, subset = select_heldout(utts, num_utts_subset=300)
    assert len(valid) == 10 and len(subset) == 90 and not set(valid) & set(subset)
    valid, _ = select_heldout(utts, num_utts_subset=300, max_heldout_fraction=0.5)
    assert len(valid) == 50


def test_perturbed_copies_are_held_out_together():
    utts = [f"{prefix}u{i:02d}" for i in range(30) for prefix in ("", "sp0.9-", "sp1.1-")]
    utt2uniq = {utt: utt.split("-")[-1] for utt in utts}
    valid, subset = select_heldout(utts, num_utts_subset=3, utt2uniq=utt2uniq)
    assert len(valid) == 9
    assert len({utt2uniq[u] for u in valid}) == 3
    assert not {utt2uniq[u] for u in subset} & {utt2uniq[u] for u in valid}
