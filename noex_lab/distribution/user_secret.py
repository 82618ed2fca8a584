"""The per-user cluster secret (like Erlang's `~/.erlang.cookie`), and a check for weak secrets.

`noex-lab node`, `noex-lab top`, `%noex start` and `%noex local` use the secret in
`$XDG_CONFIG_HOME/noex-lab/secret` (`~/.config/noex-lab/secret` when XDG_CONFIG_HOME is unset)
unless told otherwise, so every node a user starts on one machine shares a secret no other
local user can read. `Cluster.start` itself never reads it: there `cluster_secret=None` means
no secret.

The first use creates the file with 43 random characters (32 bytes): written to a temporary
file created with O_EXCL and mode 0600, then hard-linked into place, so it is never readable by
others and concurrent first uses all end up with the one file that won. A file that is not a
regular file of this user with mode 0600 (or stricter) is refused, never "fixed" silently.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from pathlib import Path

from ..core.errors import SecretFileError as SecretFileError  # (defined in core.errors, re-exported)

SECRET_BYTES = 32
MAX_FILE_BYTES = 4096
MIN_STRONG_LENGTH = 12


def secret_path() -> Path:
    """`$XDG_CONFIG_HOME/noex-lab/secret`; `~/.config` when the variable is unset or relative
    (the XDG base directory rule)."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "noex-lab" / "secret"


def load_or_create(path: Path | None = None) -> str:
    """The secret in `path` (default `secret_path()`), creating the file on first use."""
    path = secret_path() if path is None else path
    for _ in range(3):  # a concurrent creator may win between the read and the create: read again
        try:
            return _read(path)
        except FileNotFoundError:
            _create(path)
    return _read(path)


def _read(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise SecretFileError(
            f"cannot open the secret file {path}: {exc.strerror or exc} (it must be a regular file, "
            "not a symbolic link); fix it, or pass --secret-env VAR"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SecretFileError(f"the secret file {path} is not a regular file; remove it, or pass --secret-env VAR")
        if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
            raise SecretFileError(f"the secret file {path} belongs to uid {info.st_uid}, not to you; "
                                  "remove it, or pass --secret-env VAR")
        if info.st_mode & 0o077:
            raise SecretFileError(
                f"the secret file {path} is accessible to group or others (mode {stat.S_IMODE(info.st_mode):04o}): "
                f"anyone who reads it can run code on your nodes. Run `chmod 600 {path}` (and consider "
                "replacing the secret), or pass --secret-env VAR"
            )
        data = os.read(fd, MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    text = data.decode("utf-8", "replace").strip()
    if len(data) > MAX_FILE_BYTES or len(text) < 8:
        raise SecretFileError(f"the secret file {path} must hold 8 to {MAX_FILE_BYTES} characters; "
                              "remove it to get a new random one, or pass --secret-env VAR")
    return text


def _create(path: Path) -> None:
    """Write a random secret to a private temporary file, then link it into place (atomic: fails
    if another process created `path` first, and a reader never sees a half-written file)."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(tmp, flags, 0o600)
        try:
            try:
                os.write(fd, (secrets.token_urlsafe(SECRET_BYTES) + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            with contextlib.suppress(FileExistsError):  # someone else's file won: it is read next
                os.link(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    except OSError as exc:
        raise SecretFileError(f"cannot create the secret file {path}: {exc.strerror or exc}; "
                              "pass --secret-env VAR instead") from None


_WORD_AND_DIGITS = re.compile(r"^[0-9]*[A-Za-z]+[0-9]*[!?.]?$")


def weak_secret_reason(secret: str | bytes) -> str | None:
    """Why `secret` is easy to guess, or None. Deliberately simple: fewer than 12 characters, one
    word with digits around it (`sunshine2024`), or fewer than 6 distinct characters."""
    text = secret.decode("utf-8", "replace") if isinstance(secret, bytes) else secret
    if len(text) < MIN_STRONG_LENGTH:
        return f"shorter than {MIN_STRONG_LENGTH} characters"
    if _WORD_AND_DIGITS.match(text):
        return "a single word with digits, like a dictionary word plus a year"
    if len(set(text)) < 6:
        return "fewer than 6 distinct characters"
    return None
