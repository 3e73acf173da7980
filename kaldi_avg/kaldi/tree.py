"""The `tree` file (ContextDependency): parsed only far enough to count its pdfs.

docs/kaldi-formats.md 2.5, 2.6; `src/tree/context-dep.cc` `ContextDependency::Read`,
`src/tree/event-map.cc` `EventMap::Read`.  The number of pdfs is the largest `CE` answer + 1
(`ContextDependency::NumPdfs`), what `tree-info` prints as num-pdfs.
"""
from __future__ import annotations

from .binary import KaldiFormatError, KaldiReader


def _skip_event_map(r: KaldiReader) -> int:
    """Reads one EventMap (with an explicit stack: trees can be deep); returns its largest
    answer, or -1 if it has none."""
    largest = -1
    pending: list[str] = ["node"]  # "node", "non-null node" or a closing token to expect
    while pending:
        task = pending.pop()
        if task not in ("node", "non-null node"):
            r.expect_token(task)
            continue
        token = r.read_token()
        if token == "NULL" and task == "node":
            continue
        if token == "CE":
            largest = max(largest, r.read_int32())
        elif token == "TE":
            r.read_int32()  # key
            size = r.read_uint32()
            if size > len(r.data) - r.pos:  # every entry takes at least one byte
                raise r.error(f"table of {size} entries is longer than the file")
            r.expect_token("(")
            pending.append(")")
            pending.extend(["node"] * size)
        elif token == "SE":
            r.read_int32()  # key
            r.read_int_vector()  # the yes-set
            r.expect_token("{")
            pending.extend(["}", "non-null node", "non-null node"])
        else:
            raise r.error(f"expected an event map (CE, TE, SE{' or NULL' if task == 'node' else ''}), "
                          f"got {token!r}")
    return largest


def read_tree_num_pdfs(path: str) -> int:
    """The number of pdfs of the tree in `path` (binary or text); KaldiFormatError naming
    the file and byte position if it does not parse."""
    r = KaldiReader.open(path)
    r.expect_token("ContextDependency")
    context_width, central_position = r.read_int32(), r.read_int32()
    if not 0 <= central_position < context_width:
        raise r.error(f"central position {central_position} outside the context width {context_width}")
    token = r.read_token()
    if token == "ToLength":  # old trees: a map to the number of pdf-classes, unused
        _skip_event_map(r)
        token = r.read_token()
    if token != "ToPdf":
        raise r.error(f"expected ToPdf, got {token!r}")
    largest = _skip_event_map(r)
    r.expect_token("EndContextDependency")
    if largest < 0:
        raise KaldiFormatError(f"{path}: the tree has no pdfs")
    return largest + 1
