"""The training process keeps freed host memory (kaldi_avg/train/host_memory.py)."""
import platform

import pytest

from kaldi_avg.train.host_memory import keep_freed_host_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_glibc_thresholds_are_set():
    assert keep_freed_host_memory() is True
    assert keep_freed_host_memory() is True   # setting them again is harmless
