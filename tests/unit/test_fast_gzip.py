"""The gzip we write ourselves is standard gzip, hashed as written, and replaces the data files."""

from __future__ import annotations

import gzip
import hashlib
import os

from ansible.module_utils.fast_gzip import GzipHashingSink, compress_data_files, engine, isal_level


def test_the_output_is_standard_gzip_and_the_hash_is_of_the_written_bytes(tmp_path):
    payload = b"".join(b"row %d\tdeploy %s\n" % (i, hashlib.sha256(str(i).encode()).hexdigest().encode())
                       for i in range(50_000))
    target = tmp_path / "out.gz"
    with open(target, "wb") as raw:
        sink = GzipHashingSink(raw, 1)
        for start in range(0, len(payload), 65536):
            sink.write(payload[start:start + 65536])
        sink.close()
    written = target.read_bytes()
    assert gzip.decompress(written) == payload
    assert sink.hexdigest == hashlib.sha256(written).hexdigest()
    assert sink.size == len(written) < len(payload) / 2


def test_data_files_are_replaced_by_gz_files_and_the_toc_is_left_alone(tmp_path):
    (tmp_path / "toc.dat").write_bytes(b"TOC" * 100)
    for dump_id in (3001, 3002, 3003):
        (tmp_path / f"{dump_id}.dat").write_bytes(os.urandom(1000) + b"x" * 100_000)
    originals = {p.name: p.read_bytes() for p in tmp_path.glob("3*.dat")}
    files = compress_data_files(tmp_path, 1, workers=2)
    assert sorted(files) == ["3001.dat.gz", "3002.dat.gz", "3003.dat.gz"]
    assert (tmp_path / "toc.dat").read_bytes() == b"TOC" * 100
    assert not list(tmp_path.glob("3*.dat"))
    for name, digest in files.items():
        data = (tmp_path / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest
        assert gzip.decompress(data) == originals[name[:-3]]


def test_levels_map_onto_igzip_and_isal_is_the_engine_here():
    assert [isal_level(n) for n in (1, 3, 4, 6, 7, 9)] == [1, 1, 2, 2, 3, 3]
    assert engine() == "isal"  # requirements.txt pins isal: without it every backup would be slower


def test_without_isal_the_standard_zlib_writes_the_same_standard_gzip(tmp_path):
    """The fallback, run for real in a Python where isal cannot be imported."""
    import subprocess
    import sys

    from support import ROOT

    script = f"""
import sys
sys.modules['isal'] = None  # not importable, as on a runner without it
sys.path.insert(0, {str(ROOT / 'tests')!r})
import support  # noqa: F401  (our module_utils as ansible.module_utils)
from pathlib import Path
from ansible.module_utils import fast_gzip
assert fast_gzip.engine() == 'zlib', fast_gzip.engine()
print(fast_gzip.describe(6))
path = Path({str(tmp_path)!r}) / '3001.dat'
path.write_bytes(b'row\\n' * 50000)
print(fast_gzip.compress_file(path, 6)[1])
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert " ".join(out[:-1]) == "gzip by pg_backup (zlib level 6)"
    data = (tmp_path / "3001.dat.gz").read_bytes()
    assert gzip.decompress(data) == b"row\n" * 50000 and hashlib.sha256(data).hexdigest() == out[-1]
