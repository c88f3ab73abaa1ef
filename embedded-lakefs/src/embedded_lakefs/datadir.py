"""The files of a data directory that its server and its clients share: the access keys
(``credentials.json``), the running server's address (``server.json``) and the locks that start and stop it
(``spawn.lock``, ``server.lock``, ``clients.lock``)."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import string
import tempfile
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Iterator

STATE_FILE = "server.json"
CREDENTIALS_FILE = "credentials.json"
LOG_FILE = "server.log"
SPAWN_LOCK_FILE = "spawn.lock"
SERVER_LOCK_FILE = "server.lock"
CLIENTS_LOCK_FILE = "clients.lock"  # shared-locked by every live client process; the server stops only when free


@contextmanager
def spawn_lock(data_dir: Path) -> Iterator[None]:
    """Hold the data directory's spawn lock: whoever finds, starts or idle-stops its server holds it."""
    with open(Path(data_dir) / SPAWN_LOCK_FILE, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # per open file: excludes threads of one process too
        yield


def clients_connected(clients_lock: IO) -> bool:
    """Whether a client process holds a shared lock on ``clients_lock`` (an open ``clients.lock``).

    Probes with a non-blocking exclusive lock, released at once (a client taking its shared lock meanwhile waits
    an instant). Clients take their shared lock holding the spawn lock, so a "no client" answer given under the
    spawn lock stays true until that lock is released.
    """
    try:
        fcntl.flock(clients_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(clients_lock, fcntl.LOCK_UN)
    return False


def _publish(path: Path, text: str, replace: bool) -> None:
    """Write ``text`` to a temp file of this caller's own beside ``path`` (mode 0600), then move it into place
    atomically: over ``path`` when ``replace``, else only if no ``path`` exists yet (the first creator wins).
    Readers never see a part."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(tmp_name, path)
        else:
            with suppress(FileExistsError):
                os.link(tmp_name, path)
    finally:
        with suppress(FileNotFoundError):
            os.unlink(tmp_name)


@dataclass(frozen=True)
class Credentials:
    """An access key pair of the embedded server; the secret never appears in the repr."""

    access_key_id: str
    secret_access_key: str = field(repr=False)

    @classmethod
    def generate(cls) -> Credentials:
        """A new key pair shaped like lakeFS' (``AKIAJ...`` id, 40-char secret)."""
        alphabet = string.ascii_uppercase + string.digits
        key_id = "AKIAJ" + "".join(secrets.choice(alphabet) for _ in range(15))
        secret = "".join(secrets.choice(string.ascii_letters + string.digits + "+/") for _ in range(40))
        return cls(key_id, secret)


def load_or_create_credentials(data_dir: Path) -> Credentials:
    """The key pair in ``data_dir/credentials.json``, which is created once (mode 0600) when absent.

    Concurrent first callers, threads or processes, each link a complete file of their own into place;
    one wins, and every caller returns what the persisted file holds.
    """
    path = Path(data_dir) / CREDENTIALS_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _publish(path, json.dumps(asdict(Credentials.generate())), replace=False)
    try:
        data = json.loads(path.read_text())
        return Credentials(data["access_key_id"], data["secret_access_key"])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a JSON credentials file ({exc})") from None
    except KeyError as exc:
        raise ValueError(f"{path}: credentials file lacks {exc.args[0]!r}") from None


@dataclass(frozen=True)
class ServerState:
    """What ``server.json`` records of the server serving a data directory."""

    pid: int
    endpoint: str


def read_server_state(data_dir: Path) -> ServerState | None:
    """The state recorded in ``data_dir/server.json``; None when absent or unreadable."""
    try:
        data = json.loads((Path(data_dir) / STATE_FILE).read_text())
        return ServerState(int(data["pid"]), str(data["endpoint"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def write_server_state(data_dir: Path, state: ServerState) -> None:
    """Record ``state`` in ``data_dir/server.json`` atomically."""
    _publish(Path(data_dir) / STATE_FILE, json.dumps(asdict(state)), replace=True)


def remove_server_state(data_dir: Path, pid: int) -> None:
    """Remove ``data_dir/server.json`` when it records process ``pid``."""
    state = read_server_state(data_dir)
    if state is not None and state.pid == pid:
        (Path(data_dir) / STATE_FILE).unlink(missing_ok=True)
