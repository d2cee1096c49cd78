"""Database URLs for backup.sh and restore.sh (standard library only; the URL comes on stdin,
never on a command line that `ps` would show).

    python3 _pgurl.py split            URL -> four lines: libpq keywords (no dbname, no
                                       password), host:port for messages, database, password
    python3 _pgurl.py with-database    URL, then NAME on the next line -> the URL naming NAME

URLs are SQLAlchemy's (postgresql+psycopg2://...) or libpq's (postgresql://...). Their query
parameters (sslmode, host for a socket directory, ...) are libpq keywords and are kept.
"""

from __future__ import annotations

import sys
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit


def _quoted(value: str) -> str:
    """A libpq keyword value: single-quoted, with backslash and quote escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def split(url: str) -> list[str]:
    parts = urlsplit(url)
    if parts.scheme.split("+")[0] not in ("postgresql", "postgres"):
        sys.exit("not a PostgreSQL URL (postgresql://... or postgresql+psycopg2://...)")
    query = parse_qsl(parts.query)
    words = []
    if parts.hostname:
        words.append(f"host={_quoted(parts.hostname)}")
    if parts.port:
        words.append(f"port={_quoted(str(parts.port))}")
    if parts.username:
        words.append(f"user={_quoted(unquote(parts.username))}")
    words += [f"{key}={_quoted(value)}" for key, value in query]
    server = parts.hostname or dict(query).get("host") or "the local socket"
    if parts.port:
        server += f":{parts.port}"
    database = unquote(parts.path.lstrip("/"))
    password = unquote(parts.password or "")
    if "\n" in database or "\n" in password:
        sys.exit("a newline in the database name or the password is not supported")
    return [" ".join(words), server, database, password]


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(database, safe="")))


def main() -> None:
    command = sys.argv[1] if len(sys.argv) == 2 else ""
    lines = sys.stdin.read().split("\n")
    if command == "split":
        print("\n".join(split(lines[0].strip())))
    elif command == "with-database" and len(lines) >= 2:
        print(with_database(lines[0].strip(), lines[1].strip()))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
