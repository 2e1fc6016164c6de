"""Jinja filters for PostgreSQL URLs in playbooks: database name, another database, masking.

    {{ rm_database_url | pg_database_name }}            -> release_manager
    {{ rm_database_url | pg_with_database('scratch') }} -> same server and credentials, database 'scratch'
    {{ rm_database_url | pg_mask_url }}                 -> password replaced by ********
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, urlsplit, urlunsplit

MASK = "********"


def pg_database_name(url: str) -> str:
    parts = urlsplit(url)
    name = unquote(parts.path.lstrip("/"))
    if not name:
        for item in parts.query.split("&"):
            if item.startswith("dbname="):
                name = unquote(item.split("=", 1)[1])
    return name


def pg_with_database(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    query = "&".join(p for p in parts.query.split("&") if p and not p.startswith("dbname="))
    return urlunsplit(parts._replace(path="/" + quote(dbname, safe=""), query=query))


def pg_mask_url(url: str) -> str:
    parts = urlsplit(url)
    parts = parts._replace(query=re.sub(r"(^|&)password=[^&]*", rf"\1password={MASK}", parts.query))
    if parts.password is None:
        return urlunsplit(parts)
    userinfo, host = parts.netloc.rsplit("@", 1)
    return urlunsplit(parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:{MASK}@{host}"))


class FilterModule:
    def filters(self):
        return {
            "pg_database_name": pg_database_name,
            "pg_with_database": pg_with_database,
            "pg_mask_url": pg_mask_url,
        }
