"""PostgreSQL client tools (pg_dump, pg_restore, psql): finding them, their version, their compression.

A client older than the server cannot dump it (``pg_dump`` aborts with "server version mismatch"), and a
``pg_restore`` older than the ``pg_dump`` that wrote an archive cannot read it. We pick a client at
least as new as both, before anything is written, and say which versions we saw when none fits.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ansible.module_utils.operator_error import OperatorError

TOOLS = ("pg_dump", "pg_restore", "psql")
COMPRESSION_METHODS = ("none", "gzip", "lz4", "zstd")
_LEVELS = {"gzip": (1, 9), "lz4": (1, 12), "zstd": (1, 22)}
_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?(?:\.(\d+))?")
# The variables libpq reads that could make a probe connect somewhere; probes must never connect.
_LIBPQ_VARS = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGSERVICE", "PGOPTIONS")


@dataclass(frozen=True)
class ClientTools:
    """One directory holding pg_dump, pg_restore and psql of one version."""

    bin_dir: str
    version: str  # e.g. "16.2"
    major: int

    def path(self, tool: str) -> str:
        return str(Path(self.bin_dir) / tool)


@dataclass(frozen=True)
class Compression:
    """A compression choice: method and level (None: the method's default)."""

    method: str
    level: int | None = None

    @property
    def spec(self) -> str:
        """The canonical text, as pg_dump 16 spells it: none, gzip:1, lz4, zstd:3."""
        if self.method == "none" or self.level is None:
            return self.method
        return f"{self.method}:{self.level}"

    @property
    def compresses(self) -> bool:
        return self.method != "none"


def parse_client_version(text: str) -> tuple[int, str]:
    """(major, version) from ``pg_dump --version`` output.

    ``pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)`` -> (15, "15.20");
    ``pg_dump (PostgreSQL) 9.6.24`` -> (9, "9.6.24"); ``psql (PostgreSQL) 17beta1`` -> (17, "17").
    """
    match = _VERSION_RE.search(text or "")
    if not match:
        raise OperatorError(
            f"Cannot read a PostgreSQL version from '{(text or '').strip()[:200]}'.",
            "Point pg_bin_dir at a directory holding PostgreSQL client tools (pg_dump, pg_restore, psql).",
        )
    parts = [p for p in match.groups() if p is not None]
    return int(parts[0]), ".".join(parts)


def client_version(bin_dir: str, tool: str = "pg_dump") -> tuple[int, str] | None:
    """(major, version) of ``bin_dir/tool``, or None when it is missing or does not run."""
    exe = Path(bin_dir) / tool
    if not (exe.is_file() and os.access(exe, os.X_OK)):
        return None
    try:
        out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    try:
        return parse_client_version(out.stdout)
    except OperatorError:
        return None


def _embedded_bin_dir() -> str | None:
    try:
        import pgserver.postgres_server as embedded  # the PyPI 'pgserver' package, if installed
    except Exception:  # noqa: BLE001 - any import problem just means "no embedded tools"
        return None
    return str(getattr(embedded, "POSTGRES_BIN_PATH", "") or "") or None


def _version_key(path: str) -> tuple[int, ...]:
    name = Path(path).parent.name
    return tuple(int(p) for p in re.findall(r"\d+", name)) or (0,)


def candidate_bin_dirs(tool: str = "pg_dump", path_env: str | None = None) -> list[str]:
    """Where to look for client tools, in order: PATH, the embedded server's tools, Debian's newest first."""
    found: list[str] = []
    on_path = shutil.which(tool, path=path_env if path_env is not None else os.environ.get("PATH"))
    if on_path:
        found.append(str(Path(on_path).parent))
    embedded = _embedded_bin_dir()
    if embedded:
        found.append(embedded)
    found += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)  # Debian
    found += sorted(glob.glob("/usr/pgsql-*/bin"), key=_version_key, reverse=True)  # PGDG RPMs (the AWX EE)
    unique: list[str] = []
    seen: set[str] = set()
    for cand in found:
        key = os.path.realpath(cand)
        if key not in seen:
            seen.add(key)
            unique.append(cand)
    return unique


def select_client(
    candidates: list[tuple[str, tuple[int, str] | None]], minimum_major: int
) -> tuple[str, tuple[int, str]] | None:
    """The first (bin_dir, version) whose major is at least ``minimum_major``; pure, for tests."""
    for bin_dir, version in candidates:
        if version is not None and version[0] >= minimum_major:
            return bin_dir, version
    return None


def _missing_tools(bin_dir: str, tools: tuple[str, ...]) -> list[str]:
    return [t for t in tools if not (Path(bin_dir) / t).is_file()]


def find_client_tools(
    server_major: int,
    server_version: str,
    pg_bin_dir: str | None = None,
    *,
    minimum_major: int | None = None,
    why: str = "",
    tools: tuple[str, ...] = TOOLS,
) -> ClientTools:
    """Client tools at least as new as the server (and as ``minimum_major``, e.g. the archive's pg_dump).

    ``pg_bin_dir`` given: use it or fail. Otherwise search :func:`candidate_bin_dirs`.
    """
    need = max(server_major, minimum_major or 0)
    tool = tools[0]  # the one whose version we read (all tools of one directory share it)
    need_text = f"the server {server_version}" + (f" {why}" if why else "")
    if pg_bin_dir:
        version = client_version(pg_bin_dir, tool)
        if version is None:
            raise OperatorError(
                f"No working {tool} in pg_bin_dir {pg_bin_dir}.",
                f"Point pg_bin_dir at the bin directory of PostgreSQL client tools {need} or later "
                f"(for example /usr/lib/postgresql/{need}/bin).",
            )
        if version[0] < need:
            raise OperatorError(
                f"{tool} {version[1]} in {pg_bin_dir} is older than {need_text}; "
                f"a client older than the server cannot dump or restore it safely.",
                f"Set pg_bin_dir to PostgreSQL {need} (or newer) client tools, or install postgresql-client-{need}.",
                client_version=version[1],
                server_version=server_version,
            )
        missing = _missing_tools(pg_bin_dir, tools)
        if missing:
            raise OperatorError(
                f"pg_bin_dir {pg_bin_dir} lacks {', '.join(missing)}.",
                "Point pg_bin_dir at a complete PostgreSQL client bin directory.",
            )
        return ClientTools(bin_dir=pg_bin_dir, version=version[1], major=version[0])
    seen = [(d, client_version(d, tool)) for d in candidate_bin_dirs(tool)]
    usable = [(d, v) for d, v in seen if not _missing_tools(d, tools)]
    chosen = select_client(usable, need)
    if chosen is None:
        found = ", ".join(f"{tool} {v[1]} in {d}" for d, v in seen if v) or f"no {tool} at all"
        newest = max((v for _, v in seen if v), default=None)
        lead = (
            f"{tool} {newest[1]} is older than {need_text}"
            if newest
            else f"No PostgreSQL client tools found for {need_text}"
        )
        raise OperatorError(
            f"{lead} (found: {found}).",
            f"Install postgresql-client-{need} (or newer), or set pg_bin_dir to its bin directory.",
            server_version=server_version,
            client_version=newest[1] if newest else None,
        )
    bin_dir, version = chosen
    return ClientTools(bin_dir=bin_dir, version=version[1], major=version[0])


def parse_compression(value: str | int | None) -> Compression:
    """``none``, ``gzip[:N]``, ``lz4[:N]``, ``zstd[:N]`` or a bare level (0 = none, 1-9 = gzip:N)."""
    if value is None or value == "":
        return Compression("gzip", 1)
    text = str(value).strip().lower()
    if re.fullmatch(r"\d+", text):
        level = int(text)
        if level == 0:
            return Compression("none")
        if level > 9:
            raise OperatorError(
                f"Compression level {level} is out of range for gzip (1-9).",
                "Use 0-9, or name the method: zstd:19.",
            )
        return Compression("gzip", level)
    method, _, level_text = text.partition(":")
    method = method.strip()
    if method not in COMPRESSION_METHODS:
        raise OperatorError(
            f"Unknown compression '{value}'.",
            "Use none, gzip:N (1-9), lz4[:N], zstd[:N], or a number 0-9 (gzip level).",
        )
    level_text = level_text.strip().removeprefix("level=")
    if method == "none":
        if level_text not in ("", "0"):
            raise OperatorError(f"Compression '{value}' takes no level.", "Write just: none.")
        return Compression("none")
    if not level_text:
        return Compression(method)
    if not re.fullmatch(r"\d+", level_text):
        raise OperatorError(f"Compression level in '{value}' is not a number.", f"Write e.g. {method}:3.")
    level = int(level_text)
    low, high = _LEVELS[method]
    if level == 0:
        return Compression("none")
    if not low <= level <= high:
        raise OperatorError(
            f"Compression level {level} is out of range for {method} ({low}-{high}).",
            f"Use {method}:{low} to {method}:{high}.",
        )
    return Compression(method, level)


def pg_dump_compression_args(comp: Compression, client_major: int, fmt: str) -> list[str]:
    """The ``-Z`` arguments pg_dump of this major version takes for an archive format (custom/directory)."""
    if fmt not in ("custom", "directory"):
        return []
    if comp.method == "none":
        return ["-Z", "0"]
    if comp.method == "gzip":
        if client_major >= 16:
            return ["-Z", comp.spec]
        return ["-Z", str(comp.level or 6)]
    if client_major < 16:
        raise OperatorError(
            f"pg_dump {client_major} supports only gzip compression; {comp.method} needs pg_dump 16 or later.",
            f"Use compression gzip:N, or point pg_bin_dir at PostgreSQL 16+ client tools built with {comp.method}.",
        )
    return ["-Z", comp.spec]


def check_compression(comp: Compression, fmt: str, client: ClientTools) -> None:
    """Refuse, before any dump starts, a compression the format or this client's build cannot do."""
    if fmt == "tar" and comp.compresses:
        raise OperatorError(
            f"The tar format cannot be compressed (asked for {comp.spec}).",
            "Use compression: none with format: tar, or use format custom or directory.",
        )
    if fmt == "plain" and comp.method not in ("none", "gzip"):
        raise OperatorError(
            f"The plain format is compressed by gzip only (asked for {comp.spec}).",
            "Use compression gzip:N or none with format: plain, or use format custom/directory for lz4/zstd.",
        )
    if fmt == "binary" and comp.method != "gzip":
        raise OperatorError(
            f"The binary format is compressed by gzip only (asked for {comp.spec}).",
            "Use compression gzip:N with format: binary, or use format custom/directory for none, lz4 or zstd.",
        )
    if fmt in ("plain", "binary") or comp.method in ("none", "gzip"):
        return
    pg_dump_compression_args(comp, client.major, fmt)  # raises for clients before 16
    if not compression_supported(client, comp.method):
        raise OperatorError(
            f"pg_dump {client.version} in {client.bin_dir} was built without {comp.method} support.",
            f"Use compression gzip:N, or point pg_bin_dir at client tools built with {comp.method} "
            f"(e.g. Debian/PGDG postgresql-client-{client.major}).",
        )


_PROBED: dict[tuple[str, str], bool] = {}


def compression_supported(client: ClientTools, method: str) -> bool:
    """Whether this pg_dump build can compress with ``method``; a probe that never connects anywhere.

    pg_dump checks the compression specification before it connects, so an unsupported method fails at
    once with "does not support compression"; a supported one gets as far as a (failing) connection to a
    socket directory that does not exist.
    """
    if method in ("none", "gzip"):
        return True
    if client.major < 16:
        return False
    key = (client.bin_dir, method)
    if key not in _PROBED:
        env = {k: v for k, v in os.environ.items() if k not in _LIBPQ_VARS}
        try:
            out = subprocess.run(
                [client.path("pg_dump"), "-Fc", "-Z", method, "-f", os.devnull, "--no-password",
                 "-d", "dbname=probe host=/nonexistent-release-migrations-probe connect_timeout=1"],
                capture_output=True, text=True, env=env, timeout=30, check=False,
            )
            text = (out.stderr + out.stdout).lower()
            _PROBED[key] = "compression" not in text
        except (OSError, subprocess.SubprocessError):
            _PROBED[key] = False
    return _PROBED[key]
