"""Plain SQL dumps: how pg_dump marks one finished, and the ownership filter for loading one.

A plain dump is finished when its text ends with pg_dump's completion marker (a truncated file
does not). Loading one as another role skips its ownership and privilege statements
(``ALTER ... OWNER TO``, ``GRANT``, ``REVOKE``), as pg_restore's ``--no-owner --no-privileges`` does for
the archive formats; the filter never looks inside COPY data, and passes that data through in large
slices so the load is not paced by Python.
"""

from __future__ import annotations

import re
from pathlib import Path

from ansible.module_utils.fast_gzip import open_read
from ansible.module_utils.operator_error import OperatorError

DUMP_COMPLETE_MARKER = b"-- PostgreSQL database dump complete"
CHUNK = 1 << 20
# Ownership and privilege statements of a plain dump. Never applied inside COPY data.
OWNER_PRIV_RE = re.compile(
    rb"^(ALTER [A-Z ]+ .* OWNER TO .*;|GRANT .*;|REVOKE .*;|ALTER DEFAULT PRIVILEGES .*;)\s*$"
)


def verify_plain(path: Path, compressed: bool) -> None:
    """A plain dump decodes fully and ends with pg_dump's completion marker."""
    opener = open_read if compressed else open
    tail = b""
    try:
        with opener(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                tail = (tail + chunk)[-4096:]
    except Exception as exc:  # noqa: BLE001 - zlib, ISA-L and gzip each raise their own error types
        raise OperatorError(f"Verification failed: {path.name} does not decompress: {exc}.",
                            "Take another backup; check free disk space.") from None
    if DUMP_COMPLETE_MARKER not in tail:
        raise OperatorError(
            f"Verification failed: {path.name} does not end with pg_dump's completion marker (it is truncated).",
            "Take another backup; check free disk space and pg_dump's output.",
        )


def filtered_chunks(source, enabled: bool = True, chunk_size: int = CHUNK):
    """The dump read from ``source`` without ownership statements (when ``enabled``), in large pieces.

    COPY data passes through as slices (no per-line Python work); only the schema lines around it
    are looked at one by one."""
    pending = b""
    in_copy = False
    while data := source.read(chunk_size):
        out, pending, in_copy = _filter_piece(pending + data, in_copy, enabled)
        if out:
            yield out
    out, pending, in_copy = _filter_piece(pending, in_copy, enabled)
    if out or pending:
        yield out + (pending if in_copy or not (enabled and OWNER_PRIV_RE.match(pending)) else b"")


def _filter_piece(buf: bytes, in_copy: bool, enabled: bool) -> tuple[bytes, bytes, bool]:
    """(what can be sent, the unfinished rest to keep, whether we are inside COPY data at the rest)."""
    pieces: list[bytes] = []
    pos = 0
    while pos < len(buf):
        if in_copy:
            if buf.startswith(b"\\.\n", pos):
                end = pos + 3
            else:
                found = buf.find(b"\n\\.\n", pos)
                if found < 0:
                    cut = buf.rfind(b"\n", pos) + 1  # send whole lines; keep a partial one
                    if cut > pos:
                        pieces.append(buf[pos:cut])
                        pos = cut
                    break
                end = found + 4
            pieces.append(buf[pos:end])
            pos, in_copy = end, False
            continue
        newline = buf.find(b"\n", pos)
        if newline < 0:
            break
        line = buf[pos:newline + 1]
        if line.startswith(b"COPY ") and line.rstrip().endswith(b"FROM stdin;"):
            in_copy = True
            pieces.append(line)
        elif not (enabled and OWNER_PRIV_RE.match(line)):
            pieces.append(line)
        pos = newline + 1
    return b"".join(pieces), buf[pos:], in_copy


