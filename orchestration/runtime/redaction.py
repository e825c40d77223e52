"""Credentials never printed, logged or recorded: ``redact`` for every URI shown, ``split_credentials``
for a tracking URI whose user and password go to MLflow's environment variables instead."""

from __future__ import annotations

import re
import urllib.parse

__all__ = ["redact", "split_credentials"]


# A parameter whose name has one of these words (split at anything not a letter) carries a secret:
# access_token, X-Amz-Signature, X-Amz-Credential, sig, auth, apiKey, password ...
_SECRET_WORDS = re.compile(
    r"(?:^|[^a-z])(?:token|password|passwd|pwd|secret|key|apikey|auth|authorization|sig|signature|credential|"
    r"session)(?:[^a-z]|$)"
)


def _redact_parameters(text: str) -> str:
    """``a=1&sig=xyz`` -> ``a=1&sig=***``: the values of secret-named parameters, the rest as written."""
    pairs = re.split(r"([&;])", text)
    for i, pair in enumerate(pairs):
        name, equals, _ = pair.partition("=")
        if equals and _SECRET_WORDS.search(urllib.parse.unquote(name).lower()):
            pairs[i] = f"{name}=***"
    return "".join(pairs)


def redact(uri: str) -> str:
    """``https://user:secret@host/`` -> ``https://user:***@host/``; a user part alone (a token) ->
    ``***@host``; secret-named parameters in the query or the fragment (``?token=``, ``?sig=``,
    ``X-Amz-Signature=``, ``#access_token=``) -> ``***``. Others unchanged."""
    parts = urllib.parse.urlsplit(uri)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)  # a raw "@" in the password stays on the left
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}" if ":" in userinfo else f"***@{host}"
    query, fragment = _redact_parameters(parts.query), _redact_parameters(parts.fragment)
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return uri
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def split_credentials(uri: str) -> tuple[str, dict[str, str]]:
    """A server URI without its user and password, and MLflow's environment variables that carry
    them instead (``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``, or ``_TOKEN`` for a user part alone)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return uri, {}
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    user, password = urllib.parse.unquote(user), urllib.parse.unquote(password)
    bare = urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    if ":" not in userinfo:
        return bare, {"MLFLOW_TRACKING_TOKEN": user}
    return bare, {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}
