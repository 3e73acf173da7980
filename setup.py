from setuptools import find_packages, setup

# Exact pins where other versions break each other (docs/dependencies.md 1): kaldi-hmm-gmm 1.1.4 needs
# kaldifst 1.7.17 and kaldi-decoder 0.2.11. requirements.txt pins the whole tested set.
EXTRAS = {
    "mpi": ["mpi4py>=4.0", "mpich>=4.0"],
    "frontend": ["kaldi-native-fbank==1.23.0", "kaldi-hmm-gmm==1.1.4", "kaldifst==1.7.17",
                 "kaldi-decoder==0.2.11", "kaldilm==1.15.5", "kaldialign==0.12.0", "espeakng-loader==0.2.4",
                 "tqdm>=4.66"],
    "vosk": ["vosk==0.3.45"],
    "plots": ["matplotlib>=3.8"],
    "test": ["pytest>=8", "kaldi-native-io==1.23.0", "ruff==0.17.6"],
}
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})

setup(
    name="kaldi-avg",
    version="0.1.0",
    description="Parallel LSTM acoustic-model training with frequent model averaging, "
                "reading and writing Kaldi formats",
    packages=find_packages(include=["kaldi_avg", "kaldi_avg.*"]),
    # run.pl for --cmd=run.pl outside a Kaldi recipe (bin/run.pl links to utils/run.pl; the wheel holds a copy)
    package_data={"kaldi_avg": ["bin/run.pl"]},
    python_requires=">=3.10",
    install_requires=["numpy>=1.26,<3", "torch>=2.1", "kaldiio>=2.18"],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["kaldi-avg=kaldi_avg.cli:main"]},
)
