"""FSDD monophone GMM word error rate with the pip-only front end (not run in CI).

Train on george, jackson, nicolas, theo and yweweler (2500 recordings), test on lucas (500), as
Kaldi's recipe would: MFCC (Kaldi defaults, 8 kHz, no energy, dither 1.0, stored compressed as
make_mfcc.sh does) + per-speaker CMVN, prepare_lang, a one-digit grammar, train_mono.sh (40
iterations, 1000 Gaussians), mkgraph.sh, decode.sh (acwt 0.083333, beam 13, lattice beam 6) and
score_kaldi.sh.  Reference: Kaldi's own train_mono.sh gives 9.2% WER on this split.

    python benchmarks/fsdd_mono_gmm.py [--fsdd-dir DIR] [--work-dir DIR] [--dither 1.0] [--compress true]
                                       [--nj 4] [--seed 0] [--out DIR]

Writes <out>/fsdd_mono_gmm.json (WER, best LM weight and penalty, stage times) and
<out>/fsdd_mono_gmm.png (WER against LM weight per word insertion penalty).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kaldi_avg.frontend.dataprep import OOV_WORD, read_text_words, write_dict_dir  # noqa: E402
from kaldi_avg.frontend.decode import DecodeOptions  # noqa: E402
from kaldi_avg.frontend.decode_steps import decode_gmm  # noqa: E402
from kaldi_avg.frontend.features import compute_cmvn_stats_table, compute_mfcc_feats, resolve_options  # noqa: E402
from kaldi_avg.frontend.fsdd import prepare_fsdd  # noqa: E402
from kaldi_avg.frontend.gmm_train import MonoConfig, train_mono  # noqa: E402
from kaldi_avg.frontend.grammar import compile_grammar, one_word_grammar, speech_words, write_lang_with_grammar  # noqa: E402
from kaldi_avg.frontend.graph import mkgraph  # noqa: E402
from kaldi_avg.frontend.lang import Lang, prepare_lang  # noqa: E402
from kaldi_avg.frontend.score import read_transcripts  # noqa: E402
from kaldi_avg.options import kaldi_bool  # noqa: E402


def make_features(data: Path, dither: float, compress: bool = True) -> None:
    # steps/make_mfcc.sh pipes compute-mfcc-feats through `copy-feats --compress=true` by
    # default, so Kaldi's GMM (and CMVN stats) see lossily compressed features; do the same.
    values = resolve_options(overrides={"sample-frequency": 8000.0, "use-energy": False, "dither": dither,
                                        "compress": compress})
    compute_mfcc_feats(values, f"scp:{data}/wav.scp", f"ark,scp:{data}/feats.ark,{data}/feats.scp")
    compute_cmvn_stats_table(f"scp:{data}/feats.scp", f"ark,scp:{data}/cmvn.ark,{data}/cmvn.scp",
                             f"ark:{data}/spk2utt")


def wer_table(decode_dir: Path) -> dict[str, float]:
    out = {}
    for name in sorted(os.listdir(decode_dir)):
        if name.startswith("wer_"):
            out[name] = float((decode_dir / name).read_text().split()[1])
    return out


def plot(table: dict[str, float], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float]]] = {}
    for name, wer in table.items():
        _, lmwt, wip = name.split("_")
        series.setdefault(wip, []).append((int(lmwt), wer))
    fig, ax = plt.subplots(figsize=(6, 4))
    for wip, points in sorted(series.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"penalty {wip}")
    ax.axhline(9.2, color="grey", linestyle="--", label="Kaldi train_mono.sh (9.2%)")
    ax.set_xlabel("LM weight")
    ax.set_ylabel("WER (%)")
    ax.set_title("FSDD monophone GMM, test speaker lucas")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fsdd-dir", default=os.environ.get("FSDD_DIR", str(REPO.parent / "shared" / "corpora" / "fsdd")))
    p.add_argument("--work-dir", default=None, help="where data/ and exp/ go (default: a temporary dir)")
    p.add_argument("--dither", type=float, default=1.0)
    p.add_argument("--compress", type=kaldi_bool, default=True,
                   help="store compressed features, as steps/make_mfcc.sh --compress (default true)")
    p.add_argument("--nj", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="seed of the Gaussian splitting perturbations")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    a = p.parse_args()
    work = Path(a.work_dir or tempfile.mkdtemp(prefix="fsdd_mono_"))
    times = {}

    t = time.time()
    counts = prepare_fsdd(a.fsdd_dir, str(work / "data"))
    for split in ("train", "test"):
        make_features(work / "data" / split, a.dither, a.compress)
    words = set()
    for split in ("train", "test"):
        words |= read_text_words(str(work / "data" / split / "text"))
    write_dict_dir(str(work / "data" / "local" / "dict"), words)
    prepare_lang(str(work / "data" / "local" / "dict"), OOV_WORD, str(work / "data" / "lang"))
    lang = Lang.load(str(work / "data" / "lang"))
    write_lang_with_grammar(lang.dir, compile_grammar(one_word_grammar(speech_words(lang)), lang.words),
                            str(work / "data" / "lang_test"))
    times["data_features_lang"] = time.time() - t

    t = time.time()
    train_mono(str(work / "data" / "train"), lang.dir, str(work / "exp" / "mono"), MonoConfig(nj=a.nj, seed=a.seed))
    times["train_mono"] = time.time() - t
    t = time.time()
    mkgraph(str(work / "data" / "lang_test"), str(work / "exp" / "mono"), str(work / "exp" / "mono" / "graph"))
    times["mkgraph"] = time.time() - t
    t = time.time()
    decode_dir = work / "exp" / "mono" / "decode_test"
    decode_gmm(str(work / "exp" / "mono" / "graph"), str(work / "data" / "test"), str(decode_dir),
               DecodeOptions(acoustic_scale=0.083333, beam=13.0, lattice_beam=6.0), nj=1)
    times["decode_and_score"] = time.time() - t

    best = (decode_dir / "scoring_kaldi" / "best_wer").read_text().strip()
    table = wer_table(decode_dir)
    hyps = read_transcripts(str(decode_dir / "hyp.txt"))
    result = {
        "benchmark": "fsdd_mono_gmm",
        "train_utterances": counts["train"], "test_utterances": counts["test"], "decoded": len(hyps),
        "dither": a.dither, "compress": a.compress, "seed": a.seed,
        "best_wer": float(best.split()[1]), "best_wer_line": best,
        "wer_at_lmwt12_penalty0": table.get("wer_12_0.0"),
        "kaldi_reference_wer": 9.2,
        "wer_by_setting": table,
        "seconds": {k: round(v, 1) for k, v in times.items()},
        "work_dir": str(work),
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fsdd_mono_gmm.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(table, out / "fsdd_mono_gmm.png")
    print(json.dumps({k: result[k] for k in ("best_wer_line", "wer_at_lmwt12_penalty0", "seconds")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
