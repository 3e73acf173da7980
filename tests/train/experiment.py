"""A tiny Kaldi-like experiment (data dir, alignment dir, xconfig) for the training tests."""
from __future__ import annotations

import os

import numpy as np

from kaldi_avg.kaldi.binary import BINARY_HEADER, KaldiReader
from kaldi_avg.kaldi.tables import write_int_vector_table, write_matrix_table
from kaldi_avg.kaldi.transition import TransitionModel

TOPO = """<Topology>
<TopologyEntry>
<ForPhones>
1 2 3
</ForPhones>
<State> 0 <PdfClass> 0 <Transition> 0 0.5 <Transition> 1 0.5 </State>
<State> 1 <PdfClass> 1 <Transition> 1 0.5 <Transition> 2 0.5 </State>
<State> 2 </State>
</TopologyEntry>
</Topology>
"""

XCONFIG = """input dim=13 name=input
fast-lstmp-layer name=lstm1 input=Append(-1,0,1) cell-dim=12 recurrent-projection-dim=4 non-recurrent-projection-dim=4 delay=-1
output-layer name=output input=lstm1 dim=NUM_PDFS max-change=1.5
"""


def monophone_tree():
    """The tree of 3 phones with 2 pdf classes each, as Kaldi's own code builds it."""
    import kaldi_hmm_gmm as khg
    return khg.monophone_context_dependency([1, 2, 3], [0, 2, 2, 2])


def transition_model() -> TransitionModel:
    import kaldi_hmm_gmm as khg
    topo = khg.HmmTopology()
    topo.read(TOPO)
    tm = khg.TransitionModel(monophone_tree(), topo)
    return TransitionModel.read(KaldiReader.from_bytes(str(tm).encode()))


def make_experiment(root: str, num_utts: int = 24, seed: int = 0, num_short_utts: int = 0) -> dict:
    """Features, alignments and an LSTM xconfig; the last `num_short_utts` utterances are 10 frames,
    shorter than any chunk the tests train on."""
    tm = transition_model()
    num_pdfs = tm.num_pdfs
    tid2pdf = tm.transition_id_to_pdf_array()
    pdf2tid = {int(p): t for t, p in enumerate(tid2pdf) if t > 0 and int(p) >= 0 and int(p) not in {}}
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 1.5, size=(num_pdfs, 13)).astype(np.float32)
    data, ali, exp = (os.path.join(root, n) for n in ("data", "ali", "exp"))
    for p in (data, ali, os.path.join(exp, "configs")):
        os.makedirs(p, exist_ok=True)
    feats, alis, utt2spk = {}, {}, {}
    for i in range(num_utts + num_short_utts):
        utt = f"spk{i % 2}-utt{i:02d}"
        T = int(rng.integers(40, 80)) if i < num_utts else 10
        labels = []
        while len(labels) < T:
            labels += [int(rng.integers(num_pdfs))] * int(rng.integers(3, 8))
        labels = np.array(labels[:T])
        feats[utt] = (means[labels] + rng.normal(0, 0.7, size=(T, 13))).astype(np.float32)
        alis[utt] = np.array([pdf2tid[int(p)] for p in labels], dtype=np.int32)
        utt2spk[utt] = f"spk{i % 2}"
    write_matrix_table(f"ark,scp:{data}/feats.ark,{data}/feats.scp", sorted(feats.items()))
    with open(f"{data}/utt2spk", "w") as f:
        f.writelines(f"{u} {s}\n" for u, s in sorted(utt2spk.items()))
    with open(f"{data}/spk2utt", "w") as f:
        for s in sorted(set(utt2spk.values())):
            f.write(s + " " + " ".join(u for u in sorted(utt2spk) if utt2spk[u] == s) + "\n")
    write_int_vector_table(f"ark:| gzip -c > {ali}/ali.1.gz", sorted(alis.items()))
    with open(f"{ali}/num_jobs", "w") as f:
        f.write("1\n")
    with open(f"{ali}/final.mdl", "wb") as f:
        f.write(BINARY_HEADER + tm.to_bytes(True))
    monophone_tree().write(True, f"{ali}/tree")
    with open(f"{exp}/configs/network.xconfig", "w") as f:
        f.write(XCONFIG)
    return dict(data=data, ali=ali, exp=exp, num_pdfs=num_pdfs)


def train_args(exp: dict, **over) -> list[str]:
    opts = {"--feat-dir": exp["data"], "--ali-dir": exp["ali"], "--dir": exp["exp"],
            "--feat.cmvn-opts": "--norm-means=false --norm-vars=false", "--egs.chunk-width": "20",
            "--egs.chunk-left-context": "5", "--egs.chunk-left-context-initial": "0",
            "--egs.chunk-right-context-final": "0", "--trainer.samples-per-iter": "20",
            "--trainer.num-epochs": "3", "--trainer.optimization.num-jobs-initial": "1",
            "--trainer.optimization.num-jobs-final": "2",
            "--trainer.optimization.initial-effective-lrate": "0.01",
            "--trainer.optimization.final-effective-lrate": "0.001",
            "--trainer.rnn.num-chunk-per-minibatch": "8,4", "--trainer.prior-subset-size": "20",
            "--trainer.num-jobs-compute-prior": "2", "--trainer.srand": "3", "--stage": "-10"}
    opts.update(over)
    return [f"{k}={v}" for k, v in opts.items()]


def write_online_ivectors(exp: dict, dim: int = 8, period: int = 10, seed: int = 1) -> str:
    """An online i-vector directory for the experiment's data, as extract_ivectors_online.sh lays
    it out (ivector_online.scp, ivector_period): ceil(frames / period) rows per utterance, a
    per-speaker offset plus noise. Returns the directory."""
    from kaldi_avg.kaldi.tables import MatrixTable
    rng = np.random.default_rng(seed)
    out = os.path.join(os.path.dirname(exp["data"]), "ivectors")
    os.makedirs(out, exist_ok=True)
    speakers = {}
    ivectors = {}
    for utt, feats in MatrixTable(os.path.join(exp["data"], "feats.scp")).items():
        spk = utt.split("-")[0]
        offset = speakers.setdefault(spk, rng.normal(0, 1, dim))
        rows = -(-len(feats) // period)
        ivectors[utt] = (offset + rng.normal(0, 0.1, (rows, dim))).astype(np.float32)
    write_matrix_table(f"ark,scp:{out}/ivector_online.ark,{out}/ivector_online.scp", sorted(ivectors.items()))
    with open(os.path.join(out, "ivector_period"), "w") as f:
        f.write(f"{period}\n")
    return out
