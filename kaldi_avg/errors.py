"""The error every entry point reports as one line without a traceback."""
from __future__ import annotations


class UsageError(ValueError):
    """A problem with the user's options or data, not with kaldi-avg: the message names the option,
    file or utterance. Entry points print it as one line (the traceback only with --verbose)."""
