"""Running as root: PostgreSQL refuses to, so its private server runs as another user.

When the effective uid is 0, `initdb` and `postgres` run as the `postgres` system user (or
`nobody` when it does not exist), the data directory is chowned to that user, and every
directory above it (and above the binaries) that the user cannot search gets the search bit for
others (`o+x`, never read). The switch is subprocess's own (`user=`, `group=`,
`extra_groups=[]`): no setpriv or runuser needed.
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.server import ServerError


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int

    def popen_options(self) -> dict[str, Any]:
        """What makes subprocess run a command as this account (and in none of root's groups)."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def postgres_account() -> Account | None:
    """The account postgres runs as: None (ourselves) unless we are root, which it refuses."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return Account(name, entry.pw_uid, entry.pw_gid)
    raise ServerError(
        "running as root, and PostgreSQL refuses root; create a 'postgres' user "
        "(useradd --system postgres) or run as an ordinary user"
    )


def grant_search(path: Path, account: Account) -> None:
    """Let `account` reach `path`: o+x on each directory above it that it cannot search."""
    for directory in path.resolve().parents:
        info = directory.stat()
        if info.st_uid == account.uid:
            allowed = bool(info.st_mode & stat.S_IXUSR)
        elif info.st_gid == account.gid:
            allowed = bool(info.st_mode & stat.S_IXGRP)
        else:
            allowed = bool(info.st_mode & stat.S_IXOTH)
        if not allowed:
            directory.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXOTH)


def chown_tree(path: Path, account: Account) -> None:
    os.chown(path, account.uid, account.gid, follow_symlinks=False)
    for root, directories, files in os.walk(path):
        for name in directories + files:
            os.chown(Path(root) / name, account.uid, account.gid, follow_symlinks=False)
