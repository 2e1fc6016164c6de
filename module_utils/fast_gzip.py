"""Gzip at a fraction of zlib's CPU cost, for the backups we compress ourselves.

pg_dump compresses with zlib inside its own process; on a small runner that is most of a backup's
time (the runbook's `pg_dump | gzip` spends ~80 % of its time in gzip). For the directory format we
let pg_dump write uncompressed files and compress them here with Intel ISA-L's igzip (PyPI
``isal``), which writes standard gzip several times faster than zlib at a similar size; pg_restore
reads ``NNNN.dat.gz`` files of a directory archive as they are. Plain dumps are streamed through the
same compressor. Without ``isal`` the standard library's zlib is used (same output format, slower).
"""

from __future__ import annotations

import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ansible.module_utils.backup_manifest import HashingWriter

try:  # pragma: no cover - depends on the runner's packages
    from isal import isal_zlib as _isal
except ImportError:  # pragma: no cover
    _isal = None

_CHUNK = 1 << 20
_GZIP_WBITS = 31  # zlib wbits for a gzip header and trailer


def engine() -> str:
    return "isal" if _isal is not None else "zlib"


def isal_level(gzip_level: int) -> int:
    """igzip has levels 0-3; map gzip's 1-9 onto them (1-3 -> 1, 4-6 -> 2, 7-9 -> 3)."""
    return 1 if gzip_level <= 3 else (2 if gzip_level <= 6 else 3)


def compressor(gzip_level: int):
    """A compressobj writing a gzip stream."""
    if _isal is not None:
        return _isal.compressobj(isal_level(gzip_level), _isal.DEFLATED, _GZIP_WBITS)
    return zlib.compressobj(gzip_level, zlib.DEFLATED, _GZIP_WBITS)


def describe(gzip_level: int) -> str:
    if _isal is not None:
        return f"gzip by pg_backup (ISA-L igzip level {isal_level(gzip_level)})"
    return f"gzip by pg_backup (zlib level {gzip_level})"


class GzipHashingSink(HashingWriter):
    """Compress what is written; the gzip bytes go to ``raw``, hashed and counted as they are written."""

    def __init__(self, raw, gzip_level: int) -> None:
        super().__init__(raw)
        self._comp = compressor(gzip_level)

    def write(self, data) -> int:
        super().write(self._comp.compress(data))
        return len(data)

    def close(self) -> None:
        super().write(self._comp.flush())


def compress_file(src: Path, gzip_level: int) -> tuple[str, str]:
    """Replace ``src`` by ``src.gz``; returns (name of the new file, its sha256)."""
    dst = src.with_name(src.name + ".gz")
    with open(src, "rb") as source, open(dst, "xb") as raw:
        sink = GzipHashingSink(raw, gzip_level)
        while chunk := source.read(_CHUNK):
            sink.write(chunk)
        sink.close()
        raw.flush()
        os.fsync(raw.fileno())
    os.unlink(src)
    return dst.name, sink.hexdigest


def compress_data_files(directory: Path, gzip_level: int, workers: int) -> dict[str, str]:
    """Compress a directory archive's data files in parallel (the GIL is released while compressing).

    ``toc.dat`` and large-object TOCs stay as pg_dump wrote them, as pg_dump itself does. Returns
    {file name: sha256} of the compressed files, hashed while they were written.
    """
    data_files = sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(".dat")
                        and p.name != "toc.dat")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        done = list(pool.map(lambda p: compress_file(p, gzip_level), data_files))
    return dict(done)


def open_read(path: Path, mode: str = "rb"):
    """A reader of a gzip file (ISA-L's decoder when present: several times faster than zlib's)."""
    if _isal is not None:
        from isal import igzip

        return igzip.open(path, mode)
    import gzip

    return gzip.open(path, mode)
