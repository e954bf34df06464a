"""The one error path for expected failures, shared by every command and asset.

`UserError` is a failure the user can act on (bad input, missing file, refused setting): the CLI
prints it as one ``error: ...`` line and exits non-zero, assets fail with the same message and no
traceback noise. Anything else is a bug and keeps its traceback.

`redact` removes credentials from every text before it is shown or written (CLI messages, asset
failures, the ops logs): values of secret-named environment variables, URL user-info
(``http://user:KEY@host`` → ``http://user:***@host``), secret-named URL query parameters,
``Bearer`` tokens, ``api_key=`` style pairs and well-known key prefixes (``sk-``, ``hf_``,
``ghp_``...). Errors never echo secrets.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Mapping


class UserError(Exception):
    """An expected failure with a message that says what is wrong, where, and what to do."""

    exit_code = 1


class UsageError(UserError):
    """A bad command-line argument or setting (exit code 2, like argparse's own errors)."""

    exit_code = 2


_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/\s:@]*):(?P<pw>[^/\s@]+)@")
_BARE_USERINFO = re.compile(r"(?<![\w/])(?P<user>[\w.-]+):(?P<pw>[^/\s@:]+)@(?=[\w.\[-])")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}")
# URL query parameters whose name holds key/token/secret/password/signature/sig/auth
# (``?api_key=X``, ``&access_token=X``, ``?key=X``, ``&X-Amz-Signature=X``): the value goes.
_URL_QUERY_SECRET = re.compile(
    r"(?i)(?P<name>[?&;][^=&#;?\s]*(?:key|token|secret|passw(?:or)?d|pwd|sig|auth)[^=&#;?\s]*=)[^&#;\s'\"<>]+"
)
_KEY_PAIR = re.compile(
    r"(?i)\b(api[_-]?key|token|secret|password|authorization)(\s*[=:]\s*)(['\"]?)(?!(?:bearer|basic)\b)[^\s'\",&]{4,}"
)


# environment variables whose *values* are never shown: names holding one of these words
_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.I)
# well-known key formats (OpenAI/Anthropic-style sk-, Hugging Face hf_, GitHub ghp_/gho_, Slack xoxb-/xoxp-)
# (16+ characters after the prefix, no underscore after hf_/ghp_/gho_: a file named
# hf_train_split.jsonl stays readable in an error message)
_KEY_PREFIX = re.compile(r"\b(?:sk-[A-Za-z0-9_-]{16,}|(?:hf|ghp|gho)_[A-Za-z0-9]{16,}|xox[bp]-[A-Za-z0-9-]{10,})")


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """`text` without secrets. The value (6+ characters) of every variable of `env` (None:
    `os.environ`) whose name looks secret (KEY, TOKEN, SECRET, PASSWORD, CREDENTIAL) becomes
    ``<redacted:NAME>``; URL passwords, secret-named URL query values, bearer/basic tokens,
    ``key=value`` secrets and well-known key prefixes become ``***``. The one redaction of the
    project: CLI and asset messages (`user_message`) and the ops logs (`oplog`) use it."""
    for name, value in (os.environ if env is None else env).items():
        if value and len(value) >= 6 and _SECRET_ENV.search(name):
            text = text.replace(value, f"<redacted:{name}>")
    text = _KEY_PREFIX.sub("***", text)
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    text = _BARE_USERINFO.sub(lambda m: f"{m['user']}:***@", text)
    text = _BEARER.sub(lambda m: f"{m[1]} ***", text)
    text = _URL_QUERY_SECRET.sub(lambda m: f"{m['name']}***", text)
    return _KEY_PAIR.sub(lambda m: f"{m[1]}{m[2]}{m[3]}***", text)


_OS_HINTS = {
    errno.ENOENT: "check the path (command-line paths are relative to the current directory)",
    errno.EACCES: "check the file's permissions",
    errno.EPERM: "check the file's permissions",
    errno.ENOSPC: "free disk space (or point the output / SPECFORGE_DATA_ROOT at a larger disk) and run again; "
    "finished work is kept",
    errno.EDQUOT: "free disk quota and run again; finished work is kept",
    errno.EISDIR: "give a file, not a folder",
    errno.ENOTDIR: "a parent of this path is a file, not a folder",
    errno.EROFS: "the file system is read-only: choose another output location",
}


def describe_os_error(e: OSError) -> str:
    """One line for an `OSError`: what failed, on which file, and what to do."""
    what = e.strerror or str(e)
    where = f": {e.filename}" if e.filename else ""
    if e.filename2:
        where += f" -> {e.filename2}"
    hint = _OS_HINTS.get(e.errno or -1)
    return f"{what}{where}" + (f" ({hint})" if hint else "")


def user_message(e: BaseException) -> str | None:
    """The one-line message for an expected failure, or None when `e` is a bug."""
    if isinstance(e, UserError):
        return redact(str(e))
    if isinstance(e, OSError) and not isinstance(e, (ConnectionError,)) and (e.errno is not None or e.filename):
        return redact(describe_os_error(e))
    if isinstance(e, MemoryError):
        return "out of memory (lower batch sizes / workers, or use a machine with more memory)"
    return None
