"""A tiny chain experiment from Kaldi's own FSDD chain fixture (tests/chain/__init__.py): its 20
lattices (lat dir), tree and 0.trans_mdl (tree dir), phone LM and den/normalization FSTs, and
synthetic 13-dim features whose frames follow each lattice's best path's phones (so a network
can learn them), for the chain trainer's tests."""
from __future__ import annotations

import gzip
import os
import shutil

import numpy as np

from kaldi_avg.kaldi.lattice import read_compact_lattices
from kaldi_avg.kaldi.tables import write_matrix_table
from kaldi_avg.kaldi.transition import read_transition_model

from . import fixture

XCONFIG = """input dim=13 name=input
relu-renorm-layer name=tdnn1 input=Append(-1,0,1) dim=24
relu-renorm-layer name=tdnn2 input=Append(-3,0,3) dim=24
fast-lstmp-layer name=lstm1 cell-dim=16 recurrent-projection-dim=8 non-recurrent-projection-dim=8 delay=-3
output-layer name=output input=lstm1 include-log-softmax=false dim=NUM_PDFS max-change=1.5
output-layer name=output-xent input=lstm1 dim=NUM_PDFS learning-rate-factor=5.0 max-change=1.5
"""


def _first_path_phones(lat, tid_phone: np.ndarray) -> list[int]:
    """The phone of every frame along the lattice's first-arc path."""
    s, frames = lat.start, []
    while lat.arcs[s]:
        _, (_, _, tids), d = lat.arcs[s][0]
        frames += [int(tid_phone[t]) for t in tids]
        s = d
    final = lat.finals[s]
    return frames + [int(tid_phone[t]) for t in (final[2] if final else ())]


def make_chain_experiment(root: str, copies: int = 3, seed: int = 0, with_den: bool = True) -> dict:
    """data/ (features of the fixture's 20 utterances, `copies` perturbed copies of each, as speed
    perturbation makes them: utt2uniq), tree/ (tree, final.mdl), lat/ (lat.1.gz, final.mdl,
    num_jobs), exp/configs/network.xconfig, and (with_den) exp/{phone_lm,den,normalization}.fst
    from Kaldi, so that the trainer's stages -6/-5 reuse them."""
    lat_tm = read_transition_model(fixture("lat_trans.mdl"))
    tid_phone = lat_tm.transition_id_phones()
    lats = dict(read_compact_lattices(fixture("lat.20utt.txt")))
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 1.5, size=(int(tid_phone.max()) + 1, 13)).astype(np.float32)
    data, tree, lat, exp = (os.path.join(root, n) for n in ("data", "tree", "lat", "exp"))
    for p in (data, tree, lat, os.path.join(exp, "configs")):
        os.makedirs(p, exist_ok=True)
    feats, utt2spk, utt2uniq, lat_text = {}, {}, {}, []
    with open(fixture("lat.20utt.txt")) as f:
        text = f.read()
    for c in range(copies):
        prefix = f"sp{c}-" if c else ""
        for utt, lattice in lats.items():
            phones = np.array(_first_path_phones(lattice, tid_phone))
            key = prefix + utt
            feats[key] = (means[phones] + rng.normal(0, 0.7, size=(len(phones), 13))).astype(np.float32)
            utt2spk[key] = prefix + utt.split("-")[0]
            utt2uniq[key] = utt
        lat_text.append(text.replace("\ngeorge-", f"\n{prefix}george-").replace("george-", prefix + "george-", 1)
                        if prefix else text)
    write_matrix_table(f"ark,scp:{data}/feats.ark,{data}/feats.scp", sorted(feats.items()))
    for name, table in (("utt2spk", utt2spk), ("utt2uniq", utt2uniq)):
        with open(f"{data}/{name}", "w") as f:
            f.writelines(f"{u} {s}\n" for u, s in sorted(table.items()))
    with open(f"{data}/spk2utt", "w") as f:
        for s in sorted(set(utt2spk.values())):
            f.write(s + " " + " ".join(u for u in sorted(utt2spk) if utt2spk[u] == s) + "\n")
    with gzip.open(f"{lat}/lat.1.gz", "wt") as f:
        f.write("".join(lat_text))
    shutil.copy(fixture("lat_trans.mdl"), f"{lat}/final.mdl")
    for d in (lat, tree):
        with open(f"{d}/num_jobs", "w") as f:
            f.write("1\n")
    shutil.copy(fixture("tree"), f"{tree}/tree")
    shutil.copy(fixture("0.trans_mdl"), f"{tree}/final.mdl")
    shutil.copy(fixture("phones.txt"), f"{tree}/phones.txt")
    if with_den:
        for name in ("phone_lm.fst", "den.fst", "normalization.fst"):
            shutil.copy(fixture(name), f"{exp}/{name}")
    with open(f"{exp}/configs/network.xconfig", "w") as f:
        f.write(XCONFIG)
    return {"data": data, "tree": tree, "lat": lat, "dir": exp, "utts": sorted(feats)}


def chain_args(exp: dict, **over) -> list[str]:
    """Kaldi's chain/train.py options for the tiny experiment (a recipe's, scaled down)."""
    opts = {"--stage": "-4", "--cmd": "run.pl", "--use-gpu": "false", "--feat-dir": exp["data"],
            "--tree-dir": exp["tree"], "--lat-dir": exp["lat"], "--dir": exp["dir"],
            "--feat.cmvn-opts": "--norm-means=false --norm-vars=false",
            "--chain.xent-regularize": "0.1", "--chain.leaky-hmm-coefficient": "0.1",
            "--chain.l2-regularize": "0.0", "--chain.apply-deriv-weights": "false",
            "--chain.lm-opts": "--num-extra-lm-states=2000",
            "--egs.chunk-width": "30,24,36", "--egs.chunk-left-context": "6", "--egs.chunk-right-context": "0",
            "--trainer.num-chunk-per-minibatch": "16,8", "--trainer.frames-per-iter": "1500",
            "--trainer.num-epochs": "2", "--trainer.optimization.num-jobs-initial": "2",
            "--trainer.optimization.num-jobs-final": "2",
            "--trainer.optimization.initial-effective-lrate": "0.005",
            "--trainer.optimization.final-effective-lrate": "0.0005",
            "--trainer.max-param-change": "2.0", "--mpi.num-ranks": "1"}
    opts.update(over)
    return [f"{k}={v}" for k, v in opts.items() if v is not None]
