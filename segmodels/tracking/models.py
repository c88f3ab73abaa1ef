"""Models in MLflow as pointers into lakeFS: the train run's logged model, the registered versions and every
model URI a user may pass resolve to the one copy committed at ``lakefs://<repo>/<model commit>/...``.

MLflow's own artifact store never holds a model's files: the logged model is an external one (its tags name
the lakeFS location) and a registered version's ``source`` is the pinned ``lakefs://`` URI, which MLflow reads
through the ``lakefs`` artifact repository (:mod:`segmodels.lakefs_artifacts`).
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import yaml
from mlflow.entities import LoggedModel
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.utils.models import _parse_model_uri
from mlflow.tracking import MlflowClient

from segmodels.data.safe_yaml import load_yaml
from segmodels.tracking import lineage
from segmodels.versioning import LakeFSUri

CODE_MODEL_LOADER = "mlflow.pyfunc.loaders.code_model"  # the pyfunc loader of a model saved from code (no pickle)


class ModelURIError(ValueError):
    """A model URI that names no segmodels model; the message is one line naming it."""


def record_logged_model(run_id: str, model_uri: LakeFSUri, name: str = "model") -> LoggedModel:
    """The run's MLflow logged model, external to MLflow: its tags name the pinned lakeFS location."""
    return mlflow.create_external_model(
        name=name,
        source_run_id=run_id,
        model_type="segmodels-segmentation",
        tags={lineage.TAG_MODEL_URI: str(model_uri), lineage.TAG_MODEL_COMMIT: model_uri.ref},
    )


def register_version(
    client: MlflowClient, name: str, run_id: str, run_tags: dict[str, str], version_tags: dict[str, str]
) -> ModelVersion:
    """Register a train run's model under ``name``: the version's source is the run's pinned lakeFS URI and it
    is linked to the run and its logged model."""
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    return client.create_model_version(
        name,
        source=run_tags[lineage.TAG_MODEL_URI],
        run_id=run_id,
        tags=version_tags,
        model_id=run_tags.get(lineage.TAG_LOGGED_MODEL_ID),
    )


def lakefs_model_uri(model_uri: str, client: MlflowClient | None = None) -> str:
    """The URI to load a model from: ``runs:/<id>[/...]`` and ``models:/<logged model id>`` become the pinned
    ``lakefs://`` URI their run or logged model names; registered versions (``models:/<name>/<version>``,
    ``models:/<name>@<alias>``), ``lakefs://`` URIs and local folders load as they are."""
    client = client or MlflowClient()
    if model_uri.startswith("runs:/"):
        run_id = model_uri[len("runs:/") :].split("/")[0]
        try:
            tags = client.get_run(run_id).data.tags
        except MlflowException:
            raise ModelURIError(f"model_uri={model_uri!r}: no MLflow run {run_id!r}") from None
        if lineage.TAG_MODEL_URI not in tags:
            raise ModelURIError(
                f"model_uri={model_uri!r}: run {run_id} made no model (no {lineage.TAG_MODEL_URI} "
                f"tag); pass the run id of a train run"
            )
        return tags[lineage.TAG_MODEL_URI]
    if model_uri.startswith("models:/"):
        try:
            model_id = _parse_model_uri(model_uri).model_id
        except MlflowException as error:
            raise ModelURIError(f"model_uri={model_uri!r}: {error.message}") from None
        if model_id is not None:
            tags = client.get_logged_model(model_id).tags
            if lineage.TAG_MODEL_URI not in tags:
                raise ModelURIError(f"model_uri={model_uri!r}: logged model {model_id} names no lakeFS location")
            return tags[lineage.TAG_MODEL_URI]
    return model_uri


def require_model_from_code(model_uri: str, mlmodel: Path) -> None:
    """Refuse (one line) a model whose pyfunc flavour is not saved from code (MLflow's models from code: a
    ``model_code_path``): a pickled ``python_model`` or another loader would unpickle what the package holds."""
    try:
        flavor = (load_yaml(mlmodel.read_text()) or {}).get("flavors", {}).get("python_function") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        raise ModelURIError(f"model_uri={model_uri!r}: no readable MLmodel file: not a segmodels model") from None
    if flavor.get("loader_module") != CODE_MODEL_LOADER or not flavor.get("model_code_path"):
        pickled = str(flavor.get("python_model") or flavor.get("loader_module"))[:80]
        raise ModelURIError(
            f"model_uri={model_uri!r}: its MLmodel names {pickled!r}, not a model saved from code: "
            f"segmodels does not unpickle model wrappers"
        )


def first_line(text: str) -> str:
    return (str(text).strip().splitlines() or [""])[0].strip()


def model_lineage(model_uri: str, client: MlflowClient) -> dict[str, str]:
    """What a model URI stands for, as run tags: the registered model and version of ``models:/<name>/...``
    (an alias, stage or ``latest`` resolved to its version) and the lakeFS model commit its tags record, when
    known. A local folder or a ``lakefs://`` URI gives nothing."""
    try:
        if model_uri.startswith("runs:/"):
            tags = client.get_run(model_uri[len("runs:/") :].split("/")[0]).data.tags
            return {key: tags[key] for key in (lineage.TAG_MODEL_COMMIT,) if key in tags}
        if not model_uri.startswith("models:/"):
            return {}
        parsed = _parse_model_uri(model_uri)
        if parsed.model_id is not None:
            tags = client.get_logged_model(parsed.model_id).tags
            return {key: tags[key] for key in (lineage.TAG_MODEL_COMMIT,) if key in tags}
        version = registered_version(client, parsed.name, parsed.version, parsed.stage, parsed.alias)
    except MlflowException as error:
        raise ModelURIError(f"model_uri={model_uri!r}: {first_line(error.message)}") from None
    if version is None:
        raise ModelURIError(f"model_uri={model_uri!r}: registered model {parsed.name!r} has no such version")
    found = {lineage.TAG_MODEL_NAME: version.name, lineage.TAG_MODEL_VERSION: str(version.version)}
    if version.tags.get(lineage.TAG_MODEL_COMMIT):
        found[lineage.TAG_MODEL_COMMIT] = version.tags[lineage.TAG_MODEL_COMMIT]
    return found


def registered_version(
    client: MlflowClient, name: str, version: str | None, stage: str | None, alias: str | None
) -> ModelVersion | None:
    """The model version a ``models:/`` URI names (by number, alias, stage, or the newest); None when none."""
    if version is not None:
        return client.get_model_version(name, version)
    if alias is not None:
        return client.get_model_version_by_alias(name, alias)
    if stage is not None:
        versions = client.get_latest_versions(name, stages=[stage])
    else:
        versions = registered_versions(client, name)
    return max(versions, key=lambda v: int(v.version), default=None)


def registered_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of a registered model (all pages), newest first."""
    versions, token = [], None
    while True:
        page = client.search_model_versions(f"name = '{name}'", max_results=1000, page_token=token)
        versions += list(page)
        token = page.token
        if not token:
            return sorted(versions, key=lambda v: int(v.version), reverse=True)


def pinned_model_uri(model_uri: str, model: dict[str, str]) -> str:
    """``models:/<name>/<version>`` for a registered model (so the version loaded is the one recorded), else
    ``model_uri`` as given."""
    if lineage.TAG_MODEL_VERSION in model:
        return f"models:/{model[lineage.TAG_MODEL_NAME]}/{model[lineage.TAG_MODEL_VERSION]}"
    return model_uri


def load_segmentation_model(model_uri: str):
    """``(torch model, package spec)`` of the segmodels model behind any URI :func:`lakefs_model_uri` takes.
    Only a model saved from code loads: one whose MLmodel names a pickled wrapper is refused before MLflow would
    unpickle it (unpickling runs whatever code the pickle names)."""
    from segmodels.inference.pyfunc import SegmentationPyfunc

    folder = Path(mlflow.artifacts.download_artifacts(lakefs_model_uri(model_uri)))
    require_model_from_code(model_uri, folder / "MLmodel")
    wrapper = mlflow.pyfunc.load_model(str(folder)).unwrap_python_model()
    if not isinstance(wrapper, SegmentationPyfunc):
        raise ModelURIError(f"model_uri={model_uri!r} is not a segmodels segmentation model")
    return wrapper.model, wrapper.spec
