"""How the training start-up and memory grow with the corpus: synthetic Kaldi corpora of H hours.

For each H (100 frames/s) it writes a Kaldi data dir (13-dim `CM`-compressed features via
kaldiio, utt2spk, spk2utt, utt2num_frames, per-speaker CMVN stats) and an alignment dir (the tree and a
monophone transition model of 1000 phones x 3 pdfs = 3000 pdfs, `ali.{1..4}.gz` of random but
valid transition-ids), then:

  train     `steps/kaldi_avg/train_rnn.py --exit-stage=2` (a small LSTM, chunk width 20, one job
            per rank) with 1 and 2 ranks, measuring
              start-up s       launch until `log/compute_prob_train.0.log` appears (the
                               iteration-0 diagnostics, right before the first training step)
              peak RSS/rank    the largest VmRSS seen (polled every 0.2 s) of each rank process
              frames/s/rank    iteration 1 (steady state): frames / seconds in the jobs' loops
              data-wait, averaging   iteration 1's shares, from log/data_wait.log
              exp bytes        bytes of the files in the experiment dir afterwards
  targets   the pdf targets alone, in 1 and 2 concurrent processes: `read_alignments` (the
            dict every rank builds today) against `kaldi_avg.data.pdf_store.PdfStore`
            (built once; every process maps it and reads every utterance's pdf-ids), with
            seconds, VmRSS, RssAnon (private) and Pss (shared pages split between processes)
  lengths   `feat_to_len` (header reads, what DataDir.lengths does without utt2num_frames)
            against reading utt2num_frames
  egs       the bytes Kaldi's get_egs.sh would write for the same data: every chunk of the
            project's chunk plan (= nnet3-get-egs's) as one eg (formula in `kaldi_egs_bytes`);
            the archives are written twice (egs_orig.*.ark, then shuffled into egs.*.ark)

    python benchmarks/scale.py [--hours 10,20,100] [--ranks 1,2] [--extra-runs 100:10] [--work-dir DIR]
        [--out benchmarks/results]

The issue's criterion holds each rank's share of the corpus constant: 10 h x 1 rank, 20 h x 2 and
100 h x 10 all give every rank 10 h. The 10-rank run shares this machine's cores, so its start-up
is compared by each rank's CPU seconds until the first training step (start-up CPU s/rank),
which waiting does not add to, and by its peak RSS per rank.

Writes <out>/scale.json. Corpora are kept in the work dir and reused by later runs.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kaldi_avg.data.chunking import ChunkConfig, split_utterance  # noqa: E402
from kaldi_avg.kaldi.binary import BINARY_HEADER, KaldiReader  # noqa: E402
from kaldi_avg.kaldi.transition import TransitionModel  # noqa: E402

FEAT_DIM = 13
NUM_PHONES = 1000  # x 3 pdf classes = 3000 pdfs
UTTS_PER_SPEAKER = 50
HOURS_PER_ALI_JOB = 10  # ali.*.gz as a Kaldi alignment of a big corpus has them: one per 10 h, at least 4
BYTES_PER_HOUR = 6.5e6  # features (CM: ~1 byte/value) + gzip'ed alignments + pdf store
XCONFIG = ("input dim=13 name=input\n"
           "fast-lstmp-layer name=lstm1 input=Append(-1,0,1) cell-dim=64 recurrent-projection-dim=16 "
           "non-recurrent-projection-dim=16 delay=-1\n"
           "output-layer name=output input=lstm1 dim=NUM_PDFS max-change=1.5\n")
CHUNK = dict(width=20, left=20, right=0, left_initial=0, right_final=0)
SAMPLES_PER_ITER = 1000


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hours", default="10,20,100", help="comma-separated corpus sizes")
    p.add_argument("--ranks", default="1,2", help="comma-separated rank counts for the training runs")
    p.add_argument("--extra-runs", default="100:10",
                   help="more training runs as HOURS:RANKS (HOURS among --hours); ranks beyond the cores share "
                        "them (torch.distributed/gloo, whose waits sleep): compare their CPU seconds, not wall time")
    p.add_argument("--work-dir", default=str(REPO / "benchmarks" / "results" / "scale_runs"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--probe", choices=["dict", "store", "build"], help=argparse.SUPPRESS)
    p.add_argument("--ali-dir", help=argparse.SUPPRESS)
    p.add_argument("--store-dir", help=argparse.SUPPRESS)
    return p


# -- the synthetic corpus ----------------------------------------------------------------------
def monophone_tree():
    """The tree of NUM_PHONES phones with 3 pdf classes each, as Kaldi's own code builds it."""
    import kaldi_hmm_gmm as khg
    return khg.monophone_context_dependency(list(range(1, NUM_PHONES + 1)), [0] + [3] * NUM_PHONES)


def transition_model() -> TransitionModel:
    import kaldi_hmm_gmm as khg
    phones = list(range(1, NUM_PHONES + 1))
    states = "".join(f"<State> {s} <PdfClass> {s} <Transition> {s} 0.5 <Transition> {s + 1} 0.5 </State>\n"
                     for s in range(3))
    topo = khg.HmmTopology()
    topo.read(f"<Topology>\n<TopologyEntry>\n<ForPhones>\n{' '.join(map(str, phones))}\n</ForPhones>\n"
              f"{states}<State> 3 </State>\n</TopologyEntry>\n</Topology>\n")
    tm = khg.TransitionModel(monophone_tree(), topo)
    return TransitionModel.read(KaldiReader.from_bytes(str(tm).encode()))


_INT32_ELEMENT = np.dtype([("size", "u1"), ("value", "<i4")])


def _int_vector_entry(key: str, values: np.ndarray) -> bytes:
    """A binary int32-vector archive entry (docs/kaldi-formats.md 1.8)."""
    elems = np.empty(len(values), _INT32_ELEMENT)
    elems["size"], elems["value"] = 4, values
    return key.encode() + b" \0B\x04" + np.int32(len(values)).tobytes() + elems.tobytes()


def synthesize(root: Path, hours: float, seed: int = 0) -> dict:
    """data/ and ali/ (with the tree) of `hours` hours; reused when `root/done` exists."""
    from kaldiio.matio import write_array

    from kaldi_avg.atomic import write_text
    from kaldi_avg.kaldi.datadir import utt2spk_to_spk2utt, write_kaldi_map
    from kaldi_avg.kaldi.tables import write_matrix_table
    done = root / "done"
    num_jobs = max(4, round(hours / HOURS_PER_ALI_JOB))
    if done.exists() and (root / "ali" / "tree").exists():
        info = json.loads(done.read_text())
        if info.get("num_jobs") == num_jobs:
            return info
    shutil.rmtree(root, ignore_errors=True)
    data, ali = root / "data", root / "ali"
    data.mkdir(parents=True)
    ali.mkdir()
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    tm = transition_model()
    num_tids = tm.num_transition_ids
    target = int(hours * 360000)
    lengths = []
    while sum(lengths) < target:
        lengths += rng.integers(200, 1800, 1000).tolist()  # 2-18 s, 10 s on average
    lengths = np.array(lengths)[:np.searchsorted(np.cumsum(lengths), target) + 1]
    utts = [f"spk{i // UTTS_PER_SPEAKER:05d}-utt{i:07d}" for i in range(len(lengths))]
    utt2spk = {u: u.split("-")[0] for u in utts}
    per_job = -(-len(utts) // num_jobs // UTTS_PER_SPEAKER) * UTTS_PER_SPEAKER  # speakers stay whole
    scp, stats = [], {}
    for j in range(num_jobs):
        part = range(j * per_job, min((j + 1) * per_job, len(utts)))
        ark = data / f"raw_mfcc.{j + 1}.ark"
        with open(ark, "wb") as f, gzip.open(ali / f"ali.{j + 1}.gz", "wb", compresslevel=1) as g:
            for i in part:
                feats = rng.standard_normal((lengths[i], FEAT_DIM), dtype=np.float32)
                f.write(utts[i].encode() + b" ")
                scp.append(f"{utts[i]} {ark}:{f.tell()}\n")
                write_array(f, feats, compression_method=1)  # CM, as copy-feats --compress=true
                s = stats.setdefault(utt2spk[utts[i]], np.zeros((2, FEAT_DIM + 1)))
                s[0, :-1] += feats.sum(0)
                s[0, -1] += len(feats)
                s[1, :-1] += (feats.astype(np.float64) ** 2).sum(0)
                runs = rng.integers(1, num_tids + 1, lengths[i] // 3 + 1)
                tids = np.repeat(runs, rng.integers(2, 6, len(runs)))[:lengths[i]]
                tids = np.concatenate([tids, np.full(lengths[i] - len(tids), runs[-1])])
                g.write(_int_vector_entry(utts[i], tids))
    write_text(str(data / "feats.scp"), "".join(scp))
    write_kaldi_map(str(data / "utt2spk"), utt2spk)
    write_kaldi_map(str(data / "spk2utt"), utt2spk_to_spk2utt(utt2spk))
    write_kaldi_map(str(data / "utt2num_frames"), dict(zip(utts, lengths.tolist())))
    write_matrix_table(f"ark,scp:{data}/cmvn.ark,{data}/cmvn.scp", dict(sorted(stats.items())))
    write_text(str(ali / "num_jobs"), f"{num_jobs}\n")
    (ali / "final.mdl").write_bytes(BINARY_HEADER + tm.to_bytes(True))
    monophone_tree().write(True, str(ali / "tree"))
    info = {"hours": hours, "num_jobs": num_jobs, "utterances": len(utts), "frames": int(lengths.sum()),
            "synth_s": time.perf_counter() - t0, "data_bytes": dir_bytes(data), "ali_bytes": dir_bytes(ali),
            "num_pdfs": tm.num_pdfs, "utt_lengths": [int(x) for x in np.bincount(lengths)]}
    check_with_kaldi_readers(data, ali, utts[0], lengths[0])
    done.write_text(json.dumps(info))
    return info


def check_with_kaldi_readers(data: Path, ali: Path, utt: str, frames: int) -> None:
    """The first utterance's features and the whole first alignment archive, as kaldi-native-io
    reads them (when installed)."""
    try:
        import kaldi_native_io as kio
    except ImportError:
        return
    feats = kio.RandomAccessFloatMatrixReader(f"scp:{data}/feats.scp")[utt]
    assert np.array(feats).shape == (frames, FEAT_DIM)
    first = None
    with kio.SequentialInt32VectorReader(f"ark:gunzip -c {ali}/ali.1.gz |") as reader:
        for key, tids in reader:
            first = first or (key, len(tids))
    assert first == (utt, frames)


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# -- Kaldi's egs ---------------------------------------------------------------------------------
def kaldi_egs_bytes(lengths: dict[int, int], model_left: int, model_right: int) -> tuple[int, int]:
    """(egs, frames in them) that `get_egs.sh` writes for utterances of these lengths ({T: count}).

    One eg per chunk (docs/kaldi-formats.md 8.6), binary, `--compress=true`:
      key `<utt>-<first>` + " " + "\\0B"              ~ 22 + 2 bytes
      "<Nnet3Eg> " "<NumIo> " int32                   10 + 8 + 5
      input NnetIo: "<NnetIo> " "input " "<I1V> " int32 + 1 byte per row (consecutive t)
                    + CM matrix: "CM " + 16-byte header + 8 bytes per column + rows x cols bytes
                    + "</NnetIo> ";  rows = left + width + right (the chunk's contexts)
      output NnetIo: "<NnetIo> " "output " "<I1V> " int32 + 1 byte per frame
                    + "SM " int32 + per frame "SV " int32 dim, int32 count, (int32 pdf, float 1)
                    + "</NnetIo> "
      "</Nnet3Eg> "
    """
    config = ChunkConfig.from_egs_options(
        str(CHUNK["width"]), model_left_context=model_left, model_right_context=model_right,
        chunk_left_context=CHUNK["left"], chunk_right_context=CHUNK["right"],
        chunk_left_context_initial=CHUNK["left_initial"], chunk_right_context_final=CHUNK["right_final"])
    total = egs = 0
    for frames, count in lengths.items():
        for chunk in split_utterance(frames, config):
            rows, width = chunk.input_length, chunk.width
            eg = 24 + 23
            eg += 9 + 6 + 6 + 5 + rows + (3 + 16 + 8 * FEAT_DIM + rows * FEAT_DIM) + 10
            eg += 9 + 7 + 6 + 5 + width + (3 + 5 + width * (3 + 5 + 5 + 10)) + 10
            eg += 11
            total += eg * count
            egs += count
    return total, egs


# -- measuring processes ---------------------------------------------------------------------
def proc_memory(pid: int | str = "self") -> dict:
    """VmRSS, VmHWM, RssAnon, RssFile and Pss in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[name] = int(value.split()[0]) * 1024
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                out["Pss"] = int(line.split()[1]) * 1024
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class TreeMonitor(threading.Thread):
    """Polls the process tree under `root` for the peak VmRSS of each process, and records when
    `watch` (a file) appears and the CPU seconds each process had used by then."""

    def __init__(self, root: int, watch: Path):
        super().__init__(daemon=True)
        self.root, self.watch = root, watch
        self.peak: dict[int, int] = {}
        self.cmdline: dict[int, str] = {}
        self.seen_at: float | None = None
        self.cpu_at_seen: dict[int, float] = {}
        self.t0 = time.perf_counter()
        self.stop = threading.Event()

    def descendants(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = open(f"/proc/{entry}/stat").read()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
        out, todo = [], [self.root]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo += children.get(pid, [])
        return out

    def run(self) -> None:
        while not self.stop.is_set():
            for pid in self.descendants():
                try:
                    rss = proc_memory(pid)["VmRSS"]
                    if pid not in self.cmdline:
                        self.cmdline[pid] = open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
                except (OSError, KeyError):
                    continue
                self.peak[pid] = max(self.peak.get(pid, 0), rss)
            if self.seen_at is None and self.watch.exists():
                self.seen_at = time.perf_counter() - self.t0
                for pid in self.cmdline:
                    try:
                        self.cpu_at_seen[pid] = cpu_seconds(pid)
                    except OSError:
                        continue
            self.stop.wait(0.2)

    def ranks(self) -> list[int]:
        """The rank processes: Python running the rank module (not the launcher naming it)."""
        return [p for p, c in self.cmdline.items()
                if "kaldi_avg.train.cli" in c and os.path.basename(c.split()[0]).startswith("python")] or [self.root]

    def rank_peaks(self) -> list[int]:
        return [self.peak[p] for p in self.ranks()]

    def rank_startup_cpu(self) -> list[float]:
        return [self.cpu_at_seen.get(p, float("nan")) for p in self.ranks()]


def train_command(corpus: Path, exp: Path, ranks: int, backend: str | None = None) -> list[str]:
    c = CHUNK
    return [sys.executable, str(REPO / "steps" / "kaldi_avg" / "train_rnn.py"), "--stage=-10", "--use-gpu=false",
            f"--mpi.num-ranks={ranks}", *([f"--mpi.backend={backend}"] if backend else []),
            "--feat.cmvn-opts=--norm-means=true --norm-vars=false",
            "--trainer.num-epochs=1", f"--trainer.samples-per-iter={SAMPLES_PER_ITER}",
            f"--trainer.optimization.num-jobs-initial={ranks}", f"--trainer.optimization.num-jobs-final={ranks}",
            "--trainer.optimization.initial-effective-lrate=0.003",
            "--trainer.optimization.final-effective-lrate=0.0003", "--trainer.rnn.num-chunk-per-minibatch=64",
            f"--egs.chunk-width={c['width']}", f"--egs.chunk-left-context={c['left']}",
            f"--egs.chunk-right-context={c['right']}", f"--egs.chunk-left-context-initial={c['left_initial']}",
            f"--egs.chunk-right-context-final={c['right_final']}", "--exit-stage=2",
            f"--feat-dir={corpus / 'data'}", f"--ali-dir={corpus / 'ali'}", f"--dir={exp}"]


def train_run(corpus: Path, work: Path, ranks: int, backend: str | None = None) -> dict:
    exp = work / f"exp_r{ranks}"
    shutil.rmtree(exp, ignore_errors=True)
    (exp / "configs").mkdir(parents=True)
    (exp / "configs" / "network.xconfig").write_text(XCONFIG)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    with open(exp / "train_rnn.log", "w") as log:
        proc = subprocess.Popen(train_command(corpus, exp, ranks, backend), stdout=log, stderr=log, env=env)
        monitor = TreeMonitor(proc.pid, exp / "log" / "compute_prob_train.0.log")
        monitor.start()
        rc = proc.wait()
        monitor.stop.set()
        monitor.join()
    wall = time.perf_counter() - t0
    if rc:
        raise RuntimeError(f"training failed (exit {rc}); see {exp / 'train_rnn.log'}")
    iters = {}
    for line in open(exp / "log" / "data_wait.log"):
        f = line.split()
        iters[int(f[1].rstrip(":"))] = {f[i]: float(f[i + 1]) for i in range(2, len(f) - 1, 2) if f[i] != "max"}
    steady = iters[max(iters)]
    peaks = monitor.rank_peaks()
    cpu = monitor.rank_startup_cpu()
    return {"ranks": ranks, "backend": backend, "oversubscribed": ranks > len(os.sched_getaffinity(0)),
            "wall_s": wall, "startup_s": monitor.seen_at, "startup_cpu_s_per_rank": max(cpu),
            "startup_cpu_s_ranks": cpu, "peak_rss_per_rank": max(peaks), "peak_rss_ranks": peaks,
            "frames_per_s_per_rank": steady["frames"] / steady["train-seconds"],
            "data_wait_share": steady["data-wait-seconds"] / steady["train-seconds"],
            "averaging_share": steady["communication-seconds"] / steady["iteration-seconds"],
            "exp_bytes": dir_bytes(exp), "iterations": iters}


# -- the targets alone -----------------------------------------------------------------------
def probe(kind: str, ali_dir: str, store_dir: str) -> None:
    """Child process: load the targets, read every utterance's pdf-ids, say 'ready'; on a line on
    stdin (every probe is ready) print its memory as JSON; exit on the next line (so that every
    probe is alive while each one measures)."""
    from kaldi_avg.data.pdf_store import PdfStore, build_pdf_store
    from kaldi_avg.kaldi.alignment import read_alignments
    base = proc_memory()
    t0 = time.perf_counter()
    if kind == "build":
        targets = build_pdf_store(ali_dir, store_dir)
    elif kind == "store":
        targets = PdfStore.open(store_dir, ali_dir)
    else:
        targets = read_alignments(ali_dir)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    frames = sum(int(np.count_nonzero(targets[u] >= 0)) for u in targets)  # reads every value
    touch_s = time.perf_counter() - t0
    print("ready", flush=True)
    sys.stdin.readline()
    print(json.dumps({"kind": kind, "load_s": load_s, "read_all_s": touch_s, "frames": frames,
                      "baseline": base, "memory": proc_memory()}), flush=True)
    sys.stdin.readline()


def run_probes(kind: str, n: int, corpus: Path) -> list[dict]:
    cmd = [sys.executable, __file__, "--probe", kind, "--ali-dir", str(corpus / "ali"),
           "--store-dir", str(corpus / "pdf_store")]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(n)]
    for p in procs:
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError(f"probe {kind} failed")
    def tell_all() -> None:
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()

    tell_all()
    out = [json.loads(p.stdout.readline()) for p in procs]
    tell_all()
    for p in procs:
        p.wait()
    return out


def targets_rows(corpus: Path) -> list[dict]:
    shutil.rmtree(corpus / "pdf_store", ignore_errors=True)
    (build,) = run_probes("build", 1, corpus)
    rows = [dict(build, processes=1)]
    for kind in ("dict", "store"):
        for n in (1, 2):
            for r in run_probes(kind, n, corpus)[-1:]:  # the processes are alike; the last one shown
                rows.append(dict(r, processes=n))
    rows[0]["store_bytes"] = dir_bytes(corpus / "pdf_store")
    return rows


def lengths_row(corpus: Path) -> dict:
    from kaldi_avg.kaldi.datadir import DataDir, feat_to_len
    data = corpus / "data"
    t0 = time.perf_counter()
    from_headers = feat_to_len(str(data / "feats.scp"))
    header_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    from_file = DataDir(str(data)).utt2num_frames
    file_s = time.perf_counter() - t0
    assert from_headers == from_file
    return {"feat_to_len_s": header_s, "utt2num_frames_s": file_s, "utterances": len(from_file)}


# -- the table -----------------------------------------------------------------------------------
def mb(x: float) -> str:
    return f"{x / 2**20:.0f}"


def print_tables(results: list[dict]) -> None:
    print("\ntraining (steps/kaldi_avg/train_rnn.py --exit-stage=2; what the driver does today)")
    head = (f"{'hours':>6} {'ranks':>5} {'h/rank':>6} {'start-up s':>10} {'start-up CPU s/rank':>19} "
            f"{'peak RSS/rank MB':>16} {'frames/s/rank':>13} {'data-wait':>9} {'averaging':>9} {'exp MB':>7} "
            f"{'Kaldi egs MB':>12}")
    print(head + "\n" + "-" * len(head))
    for res in results:
        for r in res["train"]:
            # ranks sharing cores: wall-clock figures are not per-rank costs
            shared = "*" if r.get("oversubscribed") else " "
            print(f"{res['hours']:>6g} {r['ranks']:>5} {res['hours'] / r['ranks']:>6g} {r['startup_s']:>9.1f}{shared} "
                  f"{r['startup_cpu_s_per_rank']:>19.1f} {mb(r['peak_rss_per_rank']):>16} "
                  f"{r['frames_per_s_per_rank']:>12.0f}{shared} {100 * r['data_wait_share']:>8.2f}% "
                  f"{100 * r['averaging_share']:>8.2f}% {r['exp_bytes'] / 2**20:>7.1f} "
                  f"{mb(res['kaldi_egs']['written_bytes']):>12}")
    print("* more ranks than cores: wall-clock start-up and frames/s include waiting for a core")
    by_share: dict[float, list[tuple[dict, dict]]] = {}
    for res in results:
        for r in res["train"]:
            by_share.setdefault(res["hours"] / r["ranks"], []).append((res, r))
    for share, runs in sorted(by_share.items()):
        if len(runs) > 1:
            cpu = [r["startup_cpu_s_per_rank"] for _, r in runs]
            rss = [r["peak_rss_per_rank"] for _, r in runs]
            runs_text = ", ".join(f"{res['hours']:g} h x {r['ranks']}" for res, r in runs)
            print(f"share {share:g} h/rank ({runs_text}): start-up CPU s/rank max/min {max(cpu) / min(cpu):.2f}, "
                  f"peak RSS/rank max/min {max(rss) / min(rss):.2f}")
    print("\npdf targets alone, per process (read_alignments dict today vs PdfStore)")
    head = (f"{'hours':>6} {'targets':>7} {'procs':>5} {'load s':>7} {'read-all s':>10} {'RSS MB':>7} "
            f"{'peak MB':>7} {'+RSS MB':>7} {'RssAnon MB':>10} {'Pss MB':>7}")
    print(head + "\n" + "-" * len(head))
    for res in results:
        for r in res["targets"]:
            m, b = r["memory"], r["baseline"]
            print(f"{res['hours']:>6g} {r['kind']:>7} {r['processes']:>5} {r['load_s']:>7.2f} {r['read_all_s']:>10.2f} "
                  f"{mb(m['VmRSS']):>7} {mb(m['VmHWM']):>7} {mb(m['VmRSS'] - b['VmRSS']):>7} "
                  f"{mb(m['RssAnon']):>10} {mb(m['Pss']):>7}")
    print("\nframe counts (DataDir.lengths)")
    for res in results:
        L, s = res["lengths"], res["targets"][0]
        print(f"{res['hours']:>6g} h: {L['utterances']} utterances, feat_to_len {L['feat_to_len_s']:.2f} s, "
              f"utt2num_frames {L['utt2num_frames_s']:.2f} s; pdf store {s['store_bytes'] / 2**20:.1f} MB "
              f"built in {s['load_s']:.1f} s")


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    if args.probe:
        probe(args.probe, args.ali_dir, args.store_dir)
        return 0
    hours = [float(h) for h in args.hours.split(",")]
    work, out = Path(args.work_dir), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(work).free
    need = sum(hours) * BYTES_PER_HOUR
    print(f"disk: {free / 2**30:.1f} GiB free in {work}, about {need / 2**30:.2f} GiB needed for {hours} h")
    if need > 0.8 * free:
        raise SystemExit("not enough free disk for these corpora; drop the largest --hours")
    from kaldi_avg.model.build import xconfig_context
    results = []
    for h in hours:
        corpus = work / f"{h:g}h"
        info = synthesize(corpus, h)
        print(f"{h:g} h: {info['utterances']} utterances, {info['frames']} frames "
              f"(synthesized in {info['synth_s']:.0f} s)", flush=True)
        left, right = xconfig_context(XCONFIG, "benchmarks/scale.py", info["num_pdfs"])
        lengths = {t: n for t, n in enumerate(info.pop("utt_lengths")) if n}
        egs_bytes, num_egs = kaldi_egs_bytes(lengths, left, right)
        res = {"hours": h, "corpus": info, "kaldi_egs": {"archive_bytes": egs_bytes, "written_bytes": 2 * egs_bytes,
                                                         "egs": num_egs, "model_context": [left, right]},
               "lengths": lengths_row(corpus), "targets": targets_rows(corpus), "train": []}
        runs = [(r, None) for r in map(int, args.ranks.split(","))] + \
            [(int(r), "torch") for hh, r in (x.split(":") for x in filter(None, args.extra_runs.split(",")))
             if float(hh) == h]
        for ranks, backend in runs:
            res["train"].append(train_run(corpus, corpus, ranks, backend))
            print(f"{h:g} h, {ranks} rank(s): {res['train'][-1]['wall_s']:.0f} s", flush=True)
        results.append(res)
    print_tables(results)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "scale.json"
    path.write_text(json.dumps({"feat_dim": FEAT_DIM, "chunk": CHUNK, "samples_per_iter": SAMPLES_PER_ITER,
                                "xconfig": XCONFIG, "results": results}, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
