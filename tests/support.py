"""Helpers shared by the tests (import as `from support import ...`): the repository root, running
our modules and playbooks through the real `ansible` / `ansible-playbook`, URL helpers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(ROOT / "scripts"))

# Our module_utils are imported as ansible.module_utils.<name>, as Ansible ships them to a host.
import ansible.module_utils  # noqa: E402

if str(ROOT / "module_utils") not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(str(ROOT / "module_utils"))

import psycopg2  # noqa: E402
from ansible.module_utils.pg_connection import ConnInfo, parse_url  # noqa: E402

PASSWORD_GROUP = "rm_password_required"


def with_database(url: str, dbname: str) -> str:
    """The same server and credentials, another database."""
    return ConnInfo.parse(url).with_database(dbname).url()


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


def sql(url: str, statement: str, params=None):
    """Run one statement on a database in autocommit; rows when it returns some."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def revision_of(url: str) -> list[str]:
    """The Alembic revision(s) a database is at, sorted ([] without a version table)."""
    if not sql(url, "SELECT to_regclass('alembic_version')")[0][0]:
        return []
    return sorted(row[0] for row in sql(url, "SELECT version_num FROM alembic_version"))


def database_exists(pg_server: PgServer, url: str) -> bool:
    return bool(pg_server.execute("SELECT 1 FROM pg_database WHERE datname = %s", (parse_url(url).dbname,)))


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


def run_module(
    module: str, args: dict, *, check: bool = False, env: dict | None = None, timeout: int = 300, real: bool = False
) -> AnsibleRun:
    """Run one of our modules: its main() in this process (what the module does, in milliseconds), or with
    ``real`` (or RM_TESTS_REAL_ANSIBLE=1) the way Ansible does (ad-hoc, AnsiballZ, its own interpreter).

    Each module keeps at least one test through the real ``ansible``; the rest test its behaviour in-process.
    """
    if not real and os.environ.get("RM_TESTS_REAL_ANSIBLE") != "1":
        return call_module(module, args, check=check, env=env)
    cmd = [
        str(Path(sys.executable).parent / "ansible"), "localhost", "-i", "localhost,", "-c", "local",
        "-m", module, "-a", json.dumps(args), "-e", f"ansible_python_interpreter={sys.executable}",
    ]
    if check:
        cmd.append("--check")
    run_env = ansible_env({"ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
                           "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.json"})
    run_env.update(env or {})
    proc = subprocess.run(cmd, cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=timeout)
    try:
        data = json.loads(proc.stdout)
        result = data["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        result = {}
    return AnsibleRun(proc.returncode, proc.stdout, proc.stderr, result)


def call_module(module: str, args: dict, *, check: bool = False, env: dict | None = None) -> AnsibleRun:
    """A module's main() in this process, with Ansible's own argument handling, no_log masking and exit."""
    import contextlib
    import importlib.util
    import io

    from ansible.module_utils import basic

    basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check}}).encode()
    basic._ANSIBLE_PROFILE = "legacy"
    spec = importlib.util.spec_from_file_location(f"rm_library_{module}", ROOT / "library" / f"{module}.py")
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in (env or {}).items() if v is not None})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), contextlib.suppress(SystemExit):
            loaded.main()
    finally:
        os.environ.clear()
        os.environ.update(saved)
        basic._ANSIBLE_ARGS = None
    text = out.getvalue()
    result = json.loads(text[text.index("{"):]) if "{" in text else {}
    return AnsibleRun(2 if result.get("failed") or not result else 0, text, err.getvalue(), result)


def run_playbook(playbook: str, *, inventory: str = "inventories/local", extra_vars: dict | None = None,
                 env: dict | None = None, check: bool = False, timeout: int = 600, verbosity: int = 0) -> AnsibleRun:
    """Run a playbook with the real ansible-playbook from the repository root."""
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), playbook, "-i", inventory]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if check:
        cmd.append("--check")
    if verbosity:
        cmd.append("-" + "v" * verbosity)
    proc = subprocess.run(cmd, cwd=ROOT, env=ansible_env(env), capture_output=True, text=True, timeout=timeout)
    return AnsibleRun(proc.returncode, proc.stdout, proc.stderr, {})


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def reports(root: Path) -> list[dict]:
    """Every report.json under a reports root, oldest run first."""
    found = sorted(root.glob("*/*/*/report.json"), key=lambda p: p.parent.name)
    return [json.loads(p.read_text()) for p in found]


def local_vars(workdir: Path, **extra) -> dict:
    """Extra vars that keep a run's backups and reports inside the test's directory."""
    return {"rm_backup_dir": str(workdir / "backups"), "rm_reports_root": str(workdir / "reports"), **extra}


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def schema_dump(url: str, bin_dir: str) -> str:
    """The database's schema as pg_dump --schema-only prints it (an independent witness of "the same schema");
    pg_dump's per-run \\restrict keys and its version comments are left out."""
    from ansible.module_utils.pg_connection import ConnInfo

    out = subprocess.run([f"{bin_dir}/pg_dump", "--schema-only", "--no-owner"], env=ConnInfo.parse(url).libpq_env(),
                         capture_output=True, text=True, check=True).stdout
    # The machine's PostgreSQL 15 gives every column an attribute option pg_attver=<n> of its own per database.
    return "\n".join(re.sub(r"pg_attver=\d+", "pg_attver=N", line) for line in out.splitlines()
                     if not line.startswith(("\\restrict", "\\unrestrict", "-- Dumped")))


def table_counts(url: str) -> dict[str, int]:
    """count(*) of every table in public, by SQL."""
    tables = [row[0] for row in sql(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
    return {t: sql(url, f'SELECT count(*) FROM "{t}"')[0][0] for t in tables}


def fleet_inventory(directory: Path, urls: list[str]) -> Path:
    """inventories/fleet-example's group_vars with one host per database, each with its own rm_database_url."""
    shutil.copytree(ROOT / "inventories" / "fleet-example" / "group_vars", directory / "group_vars")
    hosts = {f"tenant-{i + 1:02d}": {"rm_database_url": url} for i, url in enumerate(urls)}
    local = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
    import yaml

    (directory / "hosts.yml").write_text(yaml.safe_dump(
        {"all": {"children": {"migration_runner": {"hosts": hosts, "vars": local}}}}, sort_keys=False))
    return directory


def binary_backup(url: str, dest, **args) -> dict:
    """A binary backup with every table's rows in binary, small as the tests' tables are."""
    run = run_module("pg_backup", {"url": url, "dest": str(dest), "format": "binary", "binary_min_bytes": 0, **args})
    assert run.rc == 0, run.output
    return run.result


def client_bin(pg_server) -> str:
    """The client tools next to the test server (the embedded one's), else those pg_backup would pick."""
    from ansible.module_utils.pg_client_tools import find_client_tools

    return pg_server.bin_dir or find_client_tools(pg_server.major, pg_server.version).bin_dir
