"""Shared fixtures: a real PostgreSQL server, throw-away databases, and running our modules and
playbooks through the real `ansible` / `ansible-playbook`.

The server is the embedded PostgreSQL 16 (PyPI ``pgserver``) unless ``PG_TEST_DSN`` names another
one, e.g. ``PG_TEST_DSN=postgresql://postgres@127.0.0.1:5432/postgres`` for the machine's PostgreSQL 15.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

# Our module_utils are imported as ansible.module_utils.<name>, as Ansible ships them to a host.
import ansible.module_utils  # noqa: E402

if str(ROOT / "module_utils") not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(str(ROOT / "module_utils"))

import psycopg2  # noqa: E402

from ansible.module_utils.pg_connection import parse_url, with_database  # noqa: E402

PASSWORD_GROUP = "rm_password_required"


@dataclass
class PgServer:
    admin_url: str  # a superuser URL to the 'postgres' database
    major: int
    version: str
    embedded: bool
    bin_dir: str | None  # client tools matching or newer than the server

    def url(self, dbname: str) -> str:
        return with_database(self.admin_url, dbname)

    def execute(self, sql: str, params=None, dbname: str = "postgres"):
        conn = psycopg2.connect(self.url(dbname))
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()


def _require_password_for_group(admin_url: str, data_dir: str) -> None:
    """Make members of PASSWORD_GROUP authenticate with a password (scram), so wrong passwords fail.

    The embedded server trusts every local connection; this adds one rule before those.
    """
    hba = Path(data_dir) / "pg_hba.conf"
    text = hba.read_text()
    rule = f"local all +{PASSWORD_GROUP} scram-sha-256\n"
    if rule not in text:
        stat = hba.stat()
        hba.write_text("# release-migrations tests: password required for this group\n" + rule + text)
        os.chown(hba, stat.st_uid, stat.st_gid)
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (PASSWORD_GROUP,))
        if cur.fetchone() is None:
            cur.execute(f"CREATE ROLE {PASSWORD_GROUP} NOLOGIN")
        cur.execute("SELECT pg_reload_conf()")
    conn.close()


@pytest.fixture(scope="session")
def pg_server() -> PgServer:
    dsn = os.environ.get("PG_TEST_DSN")
    if dsn:
        admin_url = with_database(dsn, "postgres")
        embedded = False
        bin_dir = None
    else:
        import embedded_postgres

        info = embedded_postgres.start()
        admin_url = info["admin_url"]
        embedded = True
        bin_dir = info["bin_dir"]
        _require_password_for_group(admin_url, info["data_dir"])
    conn = psycopg2.connect(admin_url)
    major = conn.server_version // 10000
    with conn.cursor() as cur:
        cur.execute("SHOW server_version")
        version = cur.fetchone()[0].split()[0]
    conn.close()
    if bin_dir is None:
        bin_dir = _client_bin_dir_for(major)
    return PgServer(admin_url=admin_url, major=major, version=version, embedded=embedded, bin_dir=bin_dir)


def _client_bin_dir_for(major: int) -> str | None:
    """A client tools directory at least as new as the server."""
    candidates = []
    try:
        import embedded_postgres

        candidates.append(str(embedded_postgres.bin_dir()))
    except ImportError:
        pass
    candidates += sorted((str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")), reverse=True)
    for cand in candidates:
        out = subprocess.run([f"{cand}/pg_dump", "--version"], capture_output=True, text=True)
        if out.returncode == 0 and int(out.stdout.split()[-1].split(".")[0]) >= major:
            return cand
    return None


@pytest.fixture
def new_database(pg_server: PgServer):
    """Factory: create an empty database with a unique name, return its URL; dropped afterwards."""
    created: list[str] = []

    def make(prefix: str = "t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        pg_server.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return pg_server.url(name)

    yield make
    for name in created:
        pg_server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def password_role(pg_server: PgServer):
    """A login role that must give its password; returns (name, password)."""
    if not pg_server.embedded:
        pytest.skip("password authentication is configured only on the embedded server")
    name = f"rm_pw_{uuid.uuid4().hex[:8]}"
    password = f"S3cr3t-{uuid.uuid4().hex[:12]}"
    pg_server.execute(f"CREATE ROLE {name} LOGIN SUPERUSER PASSWORD %s IN ROLE {PASSWORD_GROUP}", (password,))
    yield name, password
    pg_server.execute(f"DROP ROLE IF EXISTS {name}")


def url_with_credentials(url: str, user: str, password: str) -> str:
    """The same URL with another user and password."""
    info = parse_url(url)
    rest = url.split("@", 1)[1] if "@" in url.split("?")[0] else url.split("://", 1)[1]
    return f"postgresql://{user}:{password}@{rest}" if info else url


@dataclass
class AnsibleRun:
    rc: int
    stdout: str
    stderr: str
    result: dict  # the module's result (ad-hoc) or {} for playbooks

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def ansible_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.pop("ANSIBLE_STDOUT_CALLBACK", None)
    if extra:
        env.update(extra)
    return env


def run_module(module: str, args: dict, *, check: bool = False, env: dict | None = None, timeout: int = 300) -> AnsibleRun:
    """Run one of our modules the way Ansible does (ad-hoc, AnsiballZ, real interpreter)."""
    cmd = [
        str(Path(sys.executable).parent / "ansible"), "localhost", "-i", "localhost,", "-c", "local",
        "-m", module, "-a", json.dumps(args), "-e", f"ansible_python_interpreter={sys.executable}",
    ]
    if check:
        cmd.append("--check")
    run_env = ansible_env({"ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
                           "ANSIBLE_CALLBACKS_ENABLED": ""})
    run_env.update(env or {})
    proc = subprocess.run(cmd, cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=timeout)
    try:
        data = json.loads(proc.stdout)
        result = data["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        result = {}
    return AnsibleRun(proc.returncode, proc.stdout, proc.stderr, result)


def run_playbook(playbook: str, *, inventory: str = "inventories/local", extra_vars: dict | None = None,
                 env: dict | None = None, check: bool = False, timeout: int = 600) -> AnsibleRun:
    """Run a playbook with the real ansible-playbook from the repository root."""
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), playbook, "-i", inventory]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if check:
        cmd.append("--check")
    proc = subprocess.run(cmd, cwd=ROOT, env=ansible_env(env), capture_output=True, text=True, timeout=timeout)
    return AnsibleRun(proc.returncode, proc.stdout, proc.stderr, {})


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A scratch directory the embedded server's OS user may also read (backups, copies)."""
    tmp_path.chmod(0o755)
    return tmp_path


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
