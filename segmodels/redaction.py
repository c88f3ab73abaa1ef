"""Credentials out of everything segmodels records: MLflow params, tags, artifacts, data set inputs, lakeFS commit
metadata, log records and the errors a step prints.

A source or endpoint may carry a secret in its URL: the user info (``https://user:password@host/...``, or a token
alone, ``https://ghp_xxx@github.com/...``) or a query parameter (a presigned URL's ``X-Amz-Signature``, an Azure
SAS ``sig``, an ``access_token``...). :func:`redact_text` masks them in any text, wherever URLs sit in it, and
keeps the rest of each URL (scheme, host, port, path, the other parameters) so that what is recorded still says
where the data came from::

    http://user:s3cr3t@host/data.zip                 -> http://***@host/data.zip
    https://b.s3.amazonaws.com/d.zip?X-Amz-Date=20240101T000000Z&X-Amz-Signature=abc
                                                     -> https://b.s3.amazonaws.com/d.zip?X-Amz-Date=20240101T000000Z&X-Amz-Signature=***

It also masks the values of secret environment variables (``AWS_SECRET_ACCESS_KEY``,
``LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY``, any ``*_TOKEN``/``*_PASSWORD``...) and secrets registered at run
time (:func:`register_secret`, e.g. a lakeFS key read from ``~/.lakectl.yaml``), wherever they appear.

:func:`install_log_redaction` applies the same to every log record of the process.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from collections.abc import Mapping
from urllib.parse import quote, unquote, unquote_plus, urlsplit

MASK = "***"

# query/fragment/path parameter names whose value is a secret, compared lower-cased with "-" and "." read as "_"
SECRET_PARAMS = frozenset(
    {
        "key",
        "sig",
        "sas",
        "pass",
        "pwd",
        "pw",
        "auth",
        "authorization",
        "jwt",
        "hmac",
        "session",
        "bearer",
        "assertion",
        "x_amz_signature",
        "x_amz_credential",
        "x_amz_security_token",
        "awsaccesskeyid",
        "x_goog_signature",
        "x_goog_credential",
        "googleaccessid",
    }
)
# ... or whose name contains one of these (token, access_token, api_key, auth_key, password, client_secret,
# signature, jsessionid, phpsessid...)
SECRET_PARAM_PARTS = re.compile(
    r"token|secret|passw|signature|credential|jwt|hmac|sess(?:ion)?_?id|"
    r"(?:api|access|private|session|client|auth|signing|shared|master|encryption)_?key"
)
# environment variables whose value is a secret: a name with one of these words (between underscores)
SECRET_ENV_NAME = re.compile(
    r"(?:^|_)(?:SECRET|SECRETS|TOKEN|PASSWORD|PASSWD|PASSPHRASE|APIKEY|API_KEY|"
    r"PRIVATE_KEY|SIGNATURE|CREDENTIAL|CREDENTIALS)(?:_|$)"
)
NOT_SECRET_ENV_SUFFIXES = ("_ID", "_FILE", "_PATH", "_DIR")  # AWS_WEB_IDENTITY_TOKEN_FILE names a file, not a secret
MIN_SECRET_LENGTH = 6  # shorter values (true, 1, yes...) are not masked wherever they occur
SHOWN_CHARS = 80  # at most this much of a user's value goes into a message (:func:`shown`)

_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
_URL_STOP = re.compile(r"[\s\"'<>`]")  # where a URL's host, path and query written in text end
_AUTHORITY_END = re.compile(r"[/?#\n]")  # where a URL's authority (user info included) ends, as urllib reads it
_TRAILING = ".,;:!?)]}"  # punctuation after a URL in prose, not part of it
# a query (or path) parameter outside a whole URL (a logged request line "GET /d.zip?X-Amz-Signature=... HTTP/1.1")
_BARE_PARAM = re.compile(r"([?&;])([^\s?&;=#\"'<>]+)=([^\s?&;#\"'<>]*)")
_PATH_PARAM = re.compile(r";([^;/=?#]+)=([^;/?#]*)")  # a path segment's parameter: /app;jsessionid=...
_ENCODED_MARK = re.compile(r"%3[dD]|%3[aA]%2[fF]%2[fF]")  # an encoded "=" or "://": a URL or query encoded in text
_ENCODED_STOP = frozenset(" \t\r\n\"'<>&=?#")  # where such an encoded value ends
_MAX_DEPTH = 4  # encoded values within encoded values decoded this deep
_registered: set[str] = set()


def register_secret(value: str | None) -> None:
    """Mask ``value`` wherever it appears from now on (a credential read at run time, not from the environment)."""
    if value and len(str(value)) >= MIN_SECRET_LENGTH:
        _registered.add(str(value))


def is_secret_param(name: str) -> bool:
    """Whether a URL query, fragment or path parameter named ``name`` carries a secret: any case, percent-encoded
    (``%73ig``, ``X%2DAmz%2DSignature``, twice encoded too), HTML-escaped after ``&amp;``, an array ``token[]``."""
    key = name
    for _ in range(_MAX_DEPTH):
        key, previous = unquote_plus(key), key
        if key == previous:
            break
    key = key.rpartition(";")[2].strip().removesuffix("[]").lower().replace("-", "_").replace(".", "_")
    return key in SECRET_PARAMS or bool(SECRET_PARAM_PARTS.search(key))


def secret_values() -> list[str]:
    """The secrets masked wherever they appear: secret environment variables' values and registered secrets,
    longest first (so that a secret containing another is masked whole)."""
    found = set(_registered)
    for name, value in os.environ.items():
        upper = name.upper()
        if (
            len(value) >= MIN_SECRET_LENGTH
            and SECRET_ENV_NAME.search(upper)
            and not upper.endswith(NOT_SECRET_ENV_SUFFIXES)
        ):
            found.add(value)
    return sorted(found, key=len, reverse=True)


def redact_url(url: str) -> str:
    """One URL (``scheme://...``) with its user info and secret query, fragment and path parameters masked.

    The user info is what urllib and requests read as such: all of the authority (up to the first ``/``, ``?``
    or ``#``, whatever characters come before: quotes, spaces, backticks) before its last ``@``. An authority
    that is no ``host[:port]`` (a password with an unencoded ``/``, ``?`` or ``#`` cut it short) followed by an
    ``@`` is masked up to that ``@`` too."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    match = _AUTHORITY_END.search(rest)
    end = match.start() if match else len(rest)
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:  # user:password@host, or a token as user name: all of it goes
        authority = f"{MASK}@{authority.rsplit('@', 1)[1]}"
    elif "@" in tail and not _is_host(authority):
        match = _AUTHORITY_END.search(tail, tail.index("@"))
        host_end = match.start() if match else len(tail)
        at = tail.rindex("@", 0, host_end)
        authority, tail = f"{MASK}@{tail[at + 1 : host_end]}", tail[host_end:]
    before_fragment, hash_sign, fragment = tail.partition("#")
    path, question, query = before_fragment.partition("?")
    if ";" in path:
        path = _PATH_PARAM.sub(_mask_path_param, path)
    if question:
        query = _redact_params(query)
    if hash_sign and "=" in fragment:  # e.g. an OAuth #access_token=...
        fragment = _redact_params(fragment)
    return f"{scheme}://{authority}{path}{question}{query}{hash_sign}{fragment}"


def _is_host(authority: str) -> bool:
    """Whether ``authority`` reads as ``host[:port]`` (a port of digits, IPv6 in brackets)."""
    try:
        _ = urlsplit(f"//{authority}").port  # raises on a port that is not a number
    except ValueError:
        return False
    return bool(authority) and not any(char.isspace() for char in authority)


def _redact_params(query: str) -> str:
    parts = []
    for part in query.split("&"):
        name, equals, value = part.partition("=")
        parts.append(f"{name}={MASK}" if equals and value and is_secret_param(name) else part)
    return "&".join(parts)


def _mask_path_param(match: re.Match) -> str:
    name, value = match.groups()
    return f";{name}={MASK}" if value and is_secret_param(name) else match.group(0)


def _url_spans(text: str):
    """(start, end) of each ``scheme://...`` URL in ``text`` (linear: found from each ``://``). A URL's authority
    runs to the first ``/``, ``?``, ``#`` or line end, so that a user info with spaces or quotes is all in it; its
    host, path and query end at white space, a quote or ``<>`` (or where another URL starts)."""
    spans = []
    last_end = 0
    index = text.find("://")
    while index != -1:
        start = index
        while start > last_end and text[start - 1] in _SCHEME_CHARS:
            start -= 1
        while start < index and not text[start].isalpha():  # a scheme starts with a letter
            start += 1
        following = text.find("://", index + 3)
        next_start = len(text)
        if following != -1:  # another URL (e.g. in a query value) starts there
            next_start = following
            while next_start > index + 3 and text[next_start - 1] in _SCHEME_CHARS:
                next_start -= 1
        match = _AUTHORITY_END.search(text, index + 3, next_start)
        authority_end = match.start() if match else next_start
        host_start = text.rfind("@", index + 3, authority_end) + 1 or index + 3
        if host_start == index + 3 and not _is_host(text[index + 3 : authority_end]):  # cut short by a / ? # in it
            stop = _URL_STOP.search(text, authority_end, next_start)
            at = text.find("@", authority_end, stop.start() if stop else next_start)
            host_start = at + 1 or host_start
        stop = _URL_STOP.search(text, host_start, next_start)
        end = stop.start() if stop else next_start
        while end > host_start and text[end - 1] in _TRAILING:
            end -= 1
        if start < index:
            spans.append((start, end))
            last_end = end
        index = following
    return spans


def _encoded_spans(text: str):
    """(start, end) of each percent-encoded value holding an encoded ``=`` or ``://`` (linear)."""
    spans = []
    for match in _ENCODED_MARK.finditer(text):
        if spans and match.start() < spans[-1][1]:
            continue
        start = match.start()
        while start > (spans[-1][1] if spans else 0) and text[start - 1] not in _ENCODED_STOP:
            start -= 1
        end = match.end()
        while end < len(text) and text[end] not in _ENCODED_STOP:
            end += 1
        spans.append((start, end))
    return spans


def _replace_spans(text: str, spans, redact) -> str:
    pieces, position = [], 0
    for start, end in spans:
        pieces += [text[position:start], redact(text[start:end])]
        position = end
    return "".join(pieces) + text[position:]


def redact_text(text, _depth: int = 0) -> str:
    """``text`` (any value, as text) with every URL's credentials masked (:func:`redact_url`), secret query and
    path parameters masked also where no whole URL holds them (``GET /d.zip?sig=... HTTP/1.1``), percent-encoded
    URLs and queries (a ``?next=https%3A%2F%2Fu%3Apw%40host``) redacted as decoded, and every known secret value
    (:func:`secret_values`) replaced by ``***``; text without any comes back unchanged."""
    text = str(text)
    if "://" in text:
        text = _replace_spans(text, _url_spans(text), redact_url)
    if "%3" in text.upper() and _depth < _MAX_DEPTH:
        text = _replace_spans(text, _encoded_spans(text), lambda value: _redact_encoded(value, _depth + 1))
    if "=" in text and ("?" in text or "&" in text or ";" in text):
        text = _BARE_PARAM.sub(_mask_bare_param, text)
    for secret in secret_values():
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _redact_encoded(value: str, depth: int) -> str:
    """A percent-encoded value, as it is when its decoded text holds no secret, else that text redacted and
    encoded again."""
    decoded = unquote(value)
    clean = redact_text(decoded, depth)
    return value if clean == decoded else quote(clean, safe="*")


def _mask_bare_param(match: re.Match) -> str:
    separator, name, value = match.groups()
    kept = value.rstrip(_TRAILING)  # punctuation after it in prose stays
    if not kept or kept.startswith(MASK) or not is_secret_param(name):  # no secret, or masked in a URL already
        return match.group(0)
    return f"{separator}{name}={MASK}{value[len(kept) :]}"


def redact_value(value):
    """``value`` with every string in it redacted (:func:`redact_text`): dicts (values), lists, tuples, sets."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {key: redact_value(item) for key, item in value.items()}
    if type(value) in (list, tuple, set, frozenset):
        return type(value)(redact_value(item) for item in value)
    return value


def shown(value, limit: int = SHOWN_CHARS) -> str:
    """A user's value as a message may show it: redacted (:func:`redact_text`), on one line, and cut to ``limit``
    characters (``...`` and its length after)."""
    text = redact_text(value).replace("\r", " ").replace("\n", " ")
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def redact_mapping(values: Mapping) -> dict[str, str]:
    """String values (params, tags, commit metadata) redacted, keys as they are."""
    return {key: redact_text(value) for key, value in values.items()}


# -- logs and printed errors ------------------------------------------------------------------------------------


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact a log record in place: its message (arguments merged in), exception text and stack."""
    try:
        message = record.getMessage()
    except Exception:  # a broken format: the handler reports it as logging does
        return record
    clean = redact_text(message)
    if clean != message:
        record.msg, record.args = clean, ()
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        text = logging.Formatter().formatException(record.exc_info)
        clean = redact_text(text)
        if clean != text:
            record.exc_text = clean  # formatters use exc_text when set
    elif record.exc_text:
        record.exc_text = redact_text(record.exc_text)
    if record.stack_info:
        record.stack_info = redact_text(record.stack_info)
    return record


class RedactingFilter(logging.Filter):
    """A handler (or logger) filter that redacts each record it sees (:func:`redact_record`); drops none."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def install_log_redaction(logger_names=("", "segmodels", "mlflow")) -> None:
    """Redact every log record of this process from now on: records are redacted when made (a record factory,
    so every handler sees the redacted record, whichever logger it came from) and the handlers of the root,
    ``segmodels`` and ``mlflow`` loggers get a :class:`RedactingFilter` too. Calling it again adds nothing."""
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "segmodels_redacting", False):

        def redacting_factory(*args, **kwargs):
            return redact_record(factory(*args, **kwargs))

        redacting_factory.segmodels_redacting = True
        logging.setLogRecordFactory(redacting_factory)
    for name in logger_names:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(existing, RedactingFilter) for existing in handler.filters):
                handler.addFilter(RedactingFilter())


def install_excepthook() -> None:
    """Print uncaught exceptions' tracebacks redacted (a step's unexpected error may quote a URL)."""
    if getattr(sys.excepthook, "segmodels_redacting", False):
        return

    def redacting_excepthook(kind, value, tb):
        sys.stderr.write(redact_text("".join(traceback.format_exception(kind, value, tb))))
        sys.stderr.flush()

    redacting_excepthook.segmodels_redacting = True
    sys.excepthook = redacting_excepthook
