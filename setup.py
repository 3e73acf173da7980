from setuptools import find_packages, setup

setup(
    name="kaldi-avg",
    version="0.1.0",
    description="Parallel LSTM acoustic-model training with frequent model averaging, "
                "reading and writing Kaldi formats",
    packages=find_packages(include=["kaldi_avg", "kaldi_avg.*"]),
    python_requires=">=3.10",
    install_requires=["numpy", "torch", "kaldiio"],
    entry_points={"console_scripts": ["kaldi-avg=kaldi_avg.cli:main"]},
)
