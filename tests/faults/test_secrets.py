"""Nothing leaked: no verbosity prints a password, a URL that cannot be read one way is refused without a
fragment of its user-info anywhere, and a password that lives only in PGPASSWORD works on every path.

The canary password holds every character that needs encoding; a token inside it is searched in the
output of every playbook at -vvvv and in every file the runs wrote (reports, previews, manifests,
backups, logs).
"""

from __future__ import annotations

import gzip
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from ansible.module_utils.pg_connection import ConnInfo
from chain_copies import BROKEN_REVISION, GOOD_REVISION, chain_copy
from support import PASSWORD_GROUP, files_under, local_vars, reports, revision_of, run_playbook, url_with_credentials

pytestmark = [pytest.mark.db, pytest.mark.playbook]

TOKEN = "Zq9canary7f3e"
CANARY = f"Ca@n:ry/{TOKEN}%x?#y"


@pytest.fixture
def canary_url(chain_db, pg_server):
    """A database at head-2 with rows, reached as a role whose password is the canary."""
    if not pg_server.embedded:
        pytest.skip("password authentication is configured only on the embedded server")
    role = f"rm_canary_{uuid.uuid4().hex[:8]}"
    pg_server.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD %s IN ROLE {PASSWORD_GROUP}", (CANARY,))
    url = chain_db(revision="5e4a7c9d1f65", users=10)
    yield url_with_credentials(url, role, quote(CANARY, safe="")), url
    # The restore recreated the database as the canary role: drop it before the role.
    pg_server.execute(f'DROP DATABASE IF EXISTS "{ConnInfo.parse(url).dbname}" WITH (FORCE)')
    pg_server.execute(f"DROP ROLE IF EXISTS {role}")


def leaks(text: str) -> bool:
    return TOKEN in text


def file_text(path: Path) -> str:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return data.decode("utf-8", "replace")


def assert_nothing_leaked(runs: dict, workdir, expected_rc: dict | None = None) -> None:
    for name, run in runs.items():
        assert run.rc == (expected_rc or {}).get(name, 0), f"{name}:\n{run.output[-3000:]}"
        assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in run.output  # -vvvv really showed module arguments
        assert not leaks(run.output), f"{name} printed the password"
    written = files_under(workdir)
    assert any(p.name == "report.md" for p in written) and any(p.name.endswith(".manifest.json") for p in written)
    assert not [p for p in written if leaks(file_text(p)) or leaks(str(p))]


def test_no_verbosity_prints_the_password_in_any_playbook(canary_url, workdir):
    url, admin_url = canary_url
    env = {"DATABASE_URL": url}
    runs = {
        "migrate": run_playbook("playbooks/migrate.yml", env=env, extra_vars=local_vars(workdir), verbosity=4),
        "rollback": run_playbook("playbooks/rollback.yml", env=env, extra_vars=local_vars(workdir), verbosity=4),
        "backup": run_playbook("playbooks/backup.yml", env=env, extra_vars=local_vars(workdir), verbosity=4),
        "restore": run_playbook("playbooks/restore.yml", env=env, verbosity=4, extra_vars=local_vars(
            workdir, backup_path="latest", confirm_restore=ConnInfo.parse(url).dbname)),
        "drill": run_playbook("playbooks/drill.yml", env=env, extra_vars=local_vars(workdir), verbosity=4),
    }
    assert_nothing_leaked(runs, workdir)
    assert revision_of(admin_url) == ["8f1a2b3c4d5e"]  # migrated, rolled back one, restored that backup


def test_no_verbosity_prints_the_password_when_a_migration_fails_and_is_rolled_back(canary_url, workdir, tmp_path):
    url, admin_url = canary_url
    broken = chain_copy(tmp_path / "broken", GOOD_REVISION, BROKEN_REVISION)
    run = run_playbook("playbooks/migrate.yml", env={"DATABASE_URL": url, "ALEMBIC_CONFIG": str(broken)},
                       extra_vars=local_vars(workdir), verbosity=4)
    assert_nothing_leaked({"migrate-failing": run}, workdir, {"migrate-failing": 2})
    assert revision_of(admin_url) == ["5e4a7c9d1f65"]  # the failing run was rolled back to where it started


@pytest.mark.parametrize("password", ["Ca@nary-7f3e", "Sp@c:i/al%P?w#7f3e", "Sp@c:i/al%P?w7f3e", "ab/c7f3e"])
def test_a_url_with_unencoded_specials_is_refused_without_a_fragment_anywhere(password, workdir):
    url = f"postgresql://u:{password}@127.0.0.1:5432/db"
    run = run_playbook("playbooks/migrate.yml", env={"DATABASE_URL": url}, extra_vars=local_vars(workdir),
                       verbosity=2)
    assert run.rc == 2
    assert "%40" in run.output and "Percent-encode" in run.output
    pieces = {password, "7f3e", "nary", "al%P", "Sp@c", "ab/c"}
    assert not [p for p in pieces if p in run.output]
    written = files_under(workdir)
    assert written and all(p.is_relative_to(workdir / "reports" / "local" / "invalid-url") for p in written)
    assert not [p for p in written if any(piece in file_text(p) or piece in str(p) for piece in pieces)]
    report = reports(workdir / "reports")[-1]
    assert report["outcome"] == "failed" and "Percent-encode" in report["failure"]["msg"]


def test_a_password_only_in_pgpassword_works_for_every_step(chain_db, pg_server, workdir):
    if not pg_server.embedded:
        pytest.skip("password authentication is configured only on the embedded server")
    role = f"rm_envpw_{uuid.uuid4().hex[:8]}"
    password = f"Env-{uuid.uuid4().hex}"
    pg_server.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD %s IN ROLE {PASSWORD_GROUP}", (password,))
    admin_url = chain_db(revision="5e4a7c9d1f65", users=4)
    try:
        no_password = url_with_credentials(admin_url, role, "").replace(f"{role}:@", f"{role}@")
        run = run_playbook("playbooks/migrate.yml", env={"DATABASE_URL": no_password, "PGPASSWORD": password},
                           extra_vars=local_vars(workdir), verbosity=1)
        assert run.rc == 0, run.output[-3000:]
        assert revision_of(admin_url) == ["9c2b3f1a4e5d"]
        backup = Path(reports(workdir / "reports")[-1]["backup"]["path"])
        assert backup.exists() and backup.stat().st_size > 0
        assert password not in run.output
    finally:
        pg_server.execute(f'DROP DATABASE IF EXISTS "{ConnInfo.parse(admin_url).dbname}" WITH (FORCE)')
        pg_server.execute(f"DROP ROLE IF EXISTS {role}")
