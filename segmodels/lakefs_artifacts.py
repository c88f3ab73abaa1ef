"""An MLflow artifact repository for ``lakefs://<repo>/<ref>/<path>`` URIs.

Registered under the ``mlflow.artifact_repository`` entry point group (scheme ``lakefs``), so any MLflow API that
takes an artifact URI (``mlflow.artifacts.download_artifacts``, ``mlflow.pyfunc.load_model``, an experiment's
artifact location) reads and writes lakeFS through the project's client.

* **Reads** accept a branch, tag or commit id as ``<ref>``. One ``download_artifacts`` call resolves the ref to a
  commit once, so a branch that moves meanwhile never mixes files of two commits; the files come through the
  client's commit-keyed cache (checksums verified).
* **Writes** (``log_artifact``, ``log_artifacts``, ``delete_artifacts``) need ``<ref>`` to be a branch: each call is
  one ``LakeFS.atomic_write`` (ephemeral branch, one commit, one merge). ``last_commit_id`` is the branch head after
  the last write and ``pinned_uri()`` the location pinned to it. A tag or commit id is refused (history is
  immutable); so is a ref that is not there.
* The client comes from lakectl's settings (``LAKECTL_*`` / ``~/.lakectl.yaml``), else the embedded server, as the
  steps connect (``versioning.connect``); it is opened on first use, so building the repository is free. No secret
  is part of a URI, a repr or an error.
"""

from __future__ import annotations

import os
import threading

from mlflow.entities import FileInfo
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST
from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.utils.file_utils import create_tmp_dir

from segmodels.versioning import LakeFS, LakeFSError, LakeFSUri, connect

SCHEME = "lakefs"


def _clean(path: str | None) -> str:
    """A relative posix object path: no leading/trailing slash, no ``.``/``..`` or empty components."""
    if not path:
        return ""
    path = str(path).replace("\\", "/").strip("/")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if any(part == ".." for part in parts) or "\x00" in path:
        raise MlflowException(
            f"Invalid artifact path {path!r}: '..' and NUL are not allowed", error_code=INVALID_PARAMETER_VALUE
        )
    return "/".join(parts)


def _join(*parts: str | None) -> str:
    return "/".join(p for p in (_clean(part) for part in parts) if p)


class LakeFSArtifactRepository(ArtifactRepository):
    """Artifacts below ``lakefs://<repo>/<ref>/<path>``; writes are atomic commits on the branch ``<ref>``."""

    def __init__(
        self,
        artifact_uri: str,
        tracking_uri: str | None = None,
        registry_uri: str | None = None,
        lakefs: LakeFS | None = None,
    ) -> None:
        try:
            uri = LakeFSUri.parse(artifact_uri)
        except LakeFSError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        self.uri = LakeFSUri(uri.repo, uri.ref, _clean(uri.path))
        super().__init__(str(self.uri), tracking_uri, registry_uri)
        self._lakefs = lakefs
        self._lock = threading.Lock()
        self.last_commit_id: str | None = None

    @property
    def lakefs(self) -> LakeFS:
        """The client: lakectl's settings, else the embedded server (connected on first use)."""
        with self._lock:
            if self._lakefs is None:
                self._lakefs = connect()
            return self._lakefs

    # -- locations -------------------------------------------------------------------------------------------
    def _key(self, *relative: str | None) -> str:
        return _join(self.uri.path, *relative)

    def _relative(self, key: str) -> str:
        root = self.uri.path
        return key[len(root) + 1 :] if root else key

    def pinned_uri(self, artifact_path: str | None = None) -> str:
        """``lakefs://<repo>/<commit id>/<path>[/<artifact_path>]`` at the commit of the last write, else at the
        commit ``<ref>`` points at now."""
        commit = self.last_commit_id or self.lakefs.resolve_commit(self.uri.repo, self.uri.ref)
        return str(LakeFSUri(self.uri.repo, commit, self._key(artifact_path)))

    # -- writes ----------------------------------------------------------------------------------------------
    def _require_branch(self, action: str) -> None:
        repo, ref = self.uri.repo, self.uri.ref
        client = self.lakefs
        if client.is_branch(repo, ref):
            return
        try:
            client.resolve_commit(repo, ref)
        except LakeFSError as exc:
            if exc.status != 404:
                raise
            raise MlflowException(
                f"cannot {action} {self.uri}: lakeFS repository {repo!r} has no ref {ref!r} "
                f"(writes need an existing branch)",
                error_code=RESOURCE_DOES_NOT_EXIST,
            ) from None
        raise MlflowException(
            f"cannot {action} {self.uri}: {ref!r} is a tag or commit id of {repo!r}, and lakeFS "
            f"history is immutable; write to a branch (lakefs://{repo}/<branch>/...) and read "
            f"back through pinned_uri()",
            error_code=INVALID_PARAMETER_VALUE,
        )

    def _atomic(self, action: str, message: str, key: str):
        self._require_branch(action)
        return self.lakefs.atomic_write(
            self.uri.repo,
            self.uri.ref,
            message,
            metadata={"mlflow_artifact_uri": str(LakeFSUri(self.uri.repo, self.uri.ref, key))},
        )

    def log_artifact(self, local_file, artifact_path=None):
        """Upload one file to ``<path>/<artifact_path>/<file name>`` in one commit merged into the branch."""
        local_file = os.fspath(local_file)
        if not os.path.isfile(local_file):
            raise MlflowException(
                f"log_artifact to {self.uri}: {local_file} is not a file", error_code=INVALID_PARAMETER_VALUE
            )
        key = self._key(artifact_path, os.path.basename(local_file))
        with self._atomic("log an artifact to", f"MLflow artifact {key}", key) as write:
            self.lakefs.upload_file(self.uri.repo, write.branch, key, local_file)
        self.last_commit_id = write.commit_id

    def log_artifacts(self, local_dir, artifact_path=None):
        """Upload every file below ``local_dir`` to ``<path>/<artifact_path>/...`` in one commit merged into the
        branch (files already identical are skipped; nothing else below that prefix is deleted)."""
        local_dir = os.fspath(local_dir)
        if not os.path.isdir(local_dir):
            raise MlflowException(
                f"log_artifacts to {self.uri}: {local_dir} is not a directory", error_code=INVALID_PARAMETER_VALUE
            )
        prefix = self._key(artifact_path)
        with self._atomic("log artifacts to", f"MLflow artifacts {prefix or '/'}", prefix) as write:
            self.lakefs.upload_directory(self.uri.repo, write.branch, local_dir, prefix=prefix)
        self.last_commit_id = write.commit_id

    def delete_artifacts(self, artifact_path=None):
        """Delete the file or folder ``artifact_path`` (everything below the root when None) from the branch head
        in one commit. Earlier commits, and URIs pinned to them, keep the files."""
        key = self._key(artifact_path)
        with self._atomic("delete artifacts of", f"Delete MLflow artifacts {key or '/'}", key) as write:
            paths = [
                obj.path
                for obj in self.lakefs.list_objects(self.uri.repo, write.branch, key)
                if not key or obj.path == key or obj.path.startswith(key + "/")
            ]
            self.lakefs.delete_objects(self.uri.repo, write.branch, paths)
        self.last_commit_id = write.commit_id

    # -- reads -----------------------------------------------------------------------------------------------
    def list_artifacts(self, path: str | None = None) -> list[FileInfo]:
        """Files and folders directly under ``path`` (relative to the root) at ``<ref>``; [] for a file."""
        return self._list(self.uri.ref, path)

    def _list(self, ref: str, path: str | None) -> list[FileInfo]:
        relative = _clean(path)
        key = self._key(relative)
        prefix = key + "/" if key else ""
        files, folders = [], set()
        for obj in self.lakefs.list_objects(self.uri.repo, ref, prefix):
            name, slash, _ = obj.path[len(prefix) :].partition("/")
            if slash:
                folders.add(name)
            elif name:
                files.append(FileInfo(_join(relative, name), False, obj.size))
        infos = files + [FileInfo(_join(relative, name), True, None) for name in folders]
        return sorted(infos, key=lambda info: info.path)

    def _find(self, ref: str, key: str):
        """(the object at ``key``, whether ``key/`` holds objects) at ``ref``."""
        found, is_dir = None, False
        for obj in self.lakefs.list_objects(self.uri.repo, ref, key):
            if obj.path == key:
                found = obj
            elif obj.path.startswith(key + "/"):
                is_dir = True
            if found is not None and is_dir:
                break
        return found, is_dir

    def _download_file(self, remote_file_path, local_path):
        self._download_at(self.uri.ref, remote_file_path, local_path)

    def _download_at(self, ref: str, remote_file_path: str, local_path: str) -> None:
        key = self._key(remote_file_path)
        obj, _ = self._find(ref, key)
        if obj is None:
            raise MlflowException(
                f"No such artifact {remote_file_path!r} in {self.uri}", error_code=RESOURCE_DOES_NOT_EXIST
            )
        self.lakefs.download_object(self.uri.repo, ref, obj, local_path)

    def download_artifacts(self, artifact_path, dst_path=None):
        """Download a file or folder at one commit (``<ref>`` resolved once) into ``dst_path`` (a new temp
        folder when None); returns ``dst_path/artifact_path``. Folders come through the commit-keyed cache."""
        if dst_path:
            dst_path = os.path.abspath(dst_path)
            if not os.path.isdir(dst_path):
                raise MlflowException(
                    f"The destination path for downloaded artifacts must be an existing directory: {dst_path}",
                    error_code=INVALID_PARAMETER_VALUE,
                )
        else:
            dst_path = create_tmp_dir()
        relative = _clean(artifact_path)
        commit = self.lakefs.resolve_commit(self.uri.repo, self.uri.ref)
        key = self._key(relative)
        local = os.path.join(dst_path, *relative.split("/")) if relative else dst_path
        if not relative:
            self.lakefs.download_prefix(self.uri.repo, commit, key, dest=local)
            return local
        obj, is_dir = self._find(commit, key)
        if obj is not None:
            os.makedirs(os.path.dirname(local), exist_ok=True)
            self.lakefs.download_object(self.uri.repo, commit, obj, local)
        elif is_dir:
            self.lakefs.download_prefix(self.uri.repo, commit, key, dest=local)
        else:
            raise MlflowException(
                f"No such artifact {relative!r} in {self.uri} (commit {commit})", error_code=RESOURCE_DOES_NOT_EXIST
            )
        return local
