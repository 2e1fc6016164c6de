"""Shared fixtures: a real PostgreSQL server and throw-away databases.

The server is the embedded PostgreSQL 16 (PyPI ``pgserver``) unless ``PG_TEST_DSN`` names another
one, e.g. ``PG_TEST_DSN=postgresql://postgres@127.0.0.1:5432/postgres`` for the machine's PostgreSQL 15.
Helpers (run_module, run_playbook, ...) live in support.py; they are re-exported here.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import psycopg2
import pytest
from support import (  # noqa: F401  (re-exported for the tests)
    PASSWORD_GROUP,
    ROOT,
    AnsibleRun,
    PgServer,
    ansible_env,
    copy_tree,
    database_exists,
    run_module,
    run_playbook,
    sql,
    url_with_credentials,
    with_database,
)


def _require_password_for_group(admin_url: str, data_dir: str) -> None:
    """Make members of PASSWORD_GROUP authenticate with a password (scram), so wrong passwords fail.

    The embedded server trusts every local connection; this adds one rule before those. Parallel test
    workers do this one at a time.
    """
    import fcntl

    with open(Path(data_dir).parent / ".pg_hba.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _add_password_rule(admin_url, data_dir)


def _add_password_rule(admin_url: str, data_dir: str) -> None:
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


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A scratch directory the embedded server's OS user may also read (backups, copies)."""
    tmp_path.chmod(0o755)
    return tmp_path




@pytest.fixture
def target_db(pg_server: PgServer):
    """Factory: URL of a database that does not exist yet; dropped afterwards if a test created it."""
    names: list[str] = []

    def make() -> str:
        names.append(f"rm_tgt_{uuid.uuid4().hex[:10]}")
        return pg_server.url(names[-1])

    yield make
    for name in names:
        pg_server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def chain_db(new_database):
    """Factory: a new database migrated (in-process, by alembic_migrate's runner) to ``revision``, with
    ``users`` sample rows from scripts/seed_demo_data.py. Returns its URL."""
    from ansible.module_utils.alembic_runner import MigrationRequest, run
    from seed_demo_data import seed

    def make(revision: str = "head", users: int = 20, prefix: str = "flt") -> str:
        url = new_database(prefix)
        run(MigrationRequest(url=url, config=str(ROOT / "alembic.ini"), revision=revision))
        if users:
            seed(url, users)
        return url

    return make


@pytest.fixture(scope="session")
def stats_server():
    """A throwaway PostgreSQL 15 cluster with pg_stat_statements preloaded (Debian's binaries, run as the
    postgres OS user, trust auth on 127.0.0.1 and a free port): admin URL. Stopped at the end of the session."""
    import shutil
    import socket
    import tempfile

    bin_dir = Path("/usr/lib/postgresql/15/bin")
    if not (bin_dir / "initdb").exists() or shutil.which("runuser") is None:
        pytest.skip("Debian's PostgreSQL 15 server binaries are not on this machine")
    root = Path(tempfile.mkdtemp(prefix="rm-stats-pg-"))  # pytest's own tmp is private to root
    root.chmod(0o777)
    data = root / "data"
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = (f"-c shared_preload_libraries=pg_stat_statements -c port={port} -c listen_addresses=127.0.0.1 "
               f"-c unix_socket_directories={root}")
    subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-l",
                    str(root / "log"), "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def pytest_collection_modifyitems(items):
    """The longest tests first (molecule scenarios, then ansible-playbook runs), so that the two workers finish
    together instead of one waiting for a long test picked up last. Whole modules move (a stable sort on the
    module's weight), so a module's tests stay together and its module-scoped fixtures are set up once."""
    def weight(item) -> int:
        return 0 if item.get_closest_marker("molecule") else 1 if item.get_closest_marker("playbook") else 2

    module_weight: dict[str, int] = {}
    for item in items:
        module_weight[item.nodeid.split("::")[0]] = min(weight(item), module_weight.get(item.nodeid.split("::")[0], 2))
    items.sort(key=lambda item: module_weight[item.nodeid.split("::")[0]])
