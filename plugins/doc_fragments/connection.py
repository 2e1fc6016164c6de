"""Documentation of the connection options every database module shares (module_utils/module_shell.py)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  url:
    description:
      - C(postgresql://USER:PASSWORD@HOST:PORT/DBNAME) URL of the database (C(postgres://) and
        C(postgresql+DRIVER://) are accepted; a unix socket is C(postgresql://USER@/DBNAME?host=/run/postgresql)).
      - The user name and password must be percent-encoded (C(@) as C(%40), C(/) as C(%2F), C(?) as
        C(%3F), C(#) as C(%23), C(%) as C(%25)); a URL that could be read two ways is refused without
        echoing its user-info.
      - A password missing from the URL comes from C(PGPASSWORD) or C(PGPASSFILE), for the module's own
        connections and for the client tools alike.
      - Never logged; the password is masked in every result and message.
    type: str
    required: true
"""

    VERSION_TABLE = r"""
options:
  version_table:
    description:
      - Alembic's version table (C(name) found on the role's C(search_path), or C(schema.name)).
    type: str
    default: alembic_version
"""
