"""Credentials in a source URL (user info, a presigned URL's signature and token) and in the environment never
reach what a step records: MLflow params, tags, metrics, artifacts, data set inputs, the tracking database
itself, the lakeFS commit, the step's logs and the errors it prints. Real components: the embedded lakeFS, a
sqlite MLflow store, an http server on 127.0.0.1 that wants the credentials; plus the redaction table."""

from __future__ import annotations

import base64
import http.server
import io
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient
from test_data_sources import make_folder_source

from segmodels.config import load_config
from segmodels.data.sources import redact
from segmodels.dataset_store import named_after_url
from segmodels.pipeline import run_step_cli
from segmodels.pipeline.params import step_overrides
from segmodels.redaction import (
    RedactingFilter,
    install_log_redaction,
    is_secret_param,
    redact_record,
    redact_text,
    redact_value,
)
from segmodels.tracking import lineage

PROJECT = Path(__file__).resolve().parents[1]
USER = "us3r-name"
PASSWORD = "s3cr3t-Pa55"  # the server's password
WRONG_PASSWORD = "wr0ng-Pa55"  # refused by the server
SIGNATURE = "s3cr3t-5ig"  # the presigned URL's signature the server accepts
ACCESS_KEY = "AKIAS3CR3TEXAMPLE7Q"
SESSION_TOKEN = "s3cr3t-t0ken-FwoGZXIvYXdz"
ENV_SECRET = "env-s3cr3t-wJalrXUtnFEMI"  # AWS_SECRET_ACCESS_KEY, taken into a config value via ${oc.env:...}
AMZ_DATE = "20240101T000000Z"


# -- the redaction function ----------------------------------------------------------------------------------

PRESIGNED = (
    "https://bucket.s3.amazonaws.com/d/data.zip?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAEXAMPLE%2F20240101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20240101T000000Z"
    "&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Security-Token=FwoGZXIvYXdz"
    "&X-Amz-Signature=abcdef0123456789"
)
PRESIGNED_REDACTED = (
    "https://bucket.s3.amazonaws.com/d/data.zip?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=***&X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
    "&X-Amz-Security-Token=***&X-Amz-Signature=***"
)

REDACTIONS = [
    # user info: user and password, a token as user name, encoded and unencoded @, a port
    ("http://user:password@host/data.zip", "http://***@host/data.zip"),
    ("https://ghp_t0kenvalue@github.com/org/repo.git", "https://***@github.com/org/repo.git"),
    ("https://user:p%40ss@host:8443/a/b.zip?x=1", "https://***@host:8443/a/b.zip?x=1"),
    ("http://user:p@ss@host/x.tar.gz", "http://***@host/x.tar.gz"),
    ("ftp://anonymous@ftp.example.org/pub/", "ftp://***@ftp.example.org/pub/"),
    # query secrets, whatever their case, among parameters that stay
    (PRESIGNED, PRESIGNED_REDACTED),
    (
        "https://h/d.zip?x-amz-signature=abc&x-amz-date=20240101",
        "https://h/d.zip?x-amz-signature=***&x-amz-date=20240101",
    ),
    ("https://h/d.zip?X-AMZ-SECURITY-TOKEN=abc", "https://h/d.zip?X-AMZ-SECURITY-TOKEN=***"),
    (
        "https://acct.blob.core.windows.net/c/data.zip?sv=2022-11-02&sp=r&se=2024-01-01T00:00:00Z&sig=abc%2Bdef%3D",
        "https://acct.blob.core.windows.net/c/data.zip?sv=2022-11-02&sp=r&se=2024-01-01T00:00:00Z&sig=***",
    ),
    (
        "https://storage.googleapis.com/b/d.zip?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=sa%40p.iam"
        "&X-Goog-Signature=0a1b2c",
        "https://storage.googleapis.com/b/d.zip?X-Goog-Algorithm=GOOG4-RSA-SHA256"
        "&X-Goog-Credential=***&X-Goog-Signature=***",
    ),
    (
        "https://h/x?token=a&access_token=b&api_key=c&apiKey=d&key=e&password=f&Secret=g&client_secret=h&page=2",
        "https://h/x?token=***&access_token=***&api_key=***&apiKey=***&key=***&password=***&Secret=***"
        "&client_secret=***&page=2",
    ),
    (
        "https://h/x?Signature=abc&Expires=1700000000&AWSAccessKeyId=AKIA1",
        "https://h/x?Signature=***&Expires=1700000000&AWSAccessKeyId=***",
    ),
    ("https://h/x?token=&keyword=k&monkey=1&flag", "https://h/x?token=&keyword=k&monkey=1&flag"),  # nothing secret
    # fragments: parameters in them (an OAuth token) go, a plain anchor stays
    ("https://h/cb#access_token=abc&state=xyz", "https://h/cb#access_token=***&state=xyz"),
    ("https://h/doc.html#section-2", "https://h/doc.html#section-2"),
    ("https://u:p@h/doc?token=t#frag", "https://***@h/doc?token=***#frag"),
    # URLs within text: an error line, quoted values, prose, a URL in another's query, a request line
    (
        "download failed for http://u:pw@host/d.zip?sig=abc: 401 Unauthorized",
        "download failed for http://***@host/d.zip?sig=***: 401 Unauthorized",
    ),
    ("{'a': 'http://u:p@h/x', 'b': \"s3://k:s@bucket/p\"}", "{'a': 'http://***@h/x', 'b': \"s3://***@bucket/p\"}"),
    ("see http://u:p@h/x.", "see http://***@h/x."),
    ("(from https://u:p@h/x)", "(from https://***@h/x)"),
    ("https://h/login?next=https://u:p@other/x&token=t", "https://h/login?next=https://***@other/x&token=***"),
    (
        '127.0.0.1:8000 "GET /d.zip?X-Amz-Signature=abc&X-Amz-Date=1 HTTP/1.1" 403',
        '127.0.0.1:8000 "GET /d.zip?X-Amz-Signature=***&X-Amz-Date=1 HTTP/1.1" 403',
    ),
    # s3:// and lakefs:// URLs
    ("s3://AKIAKEY:secretkey@bucket/prefix/", "s3://***@bucket/prefix/"),
    ("s3://bucket/prefix/", "s3://bucket/prefix/"),
    ("lakefs://repo/main/data", "lakefs://repo/main/data"),
    ("lakefs://repo/0123456789abcdef/data/images/a.png", "lakefs://repo/0123456789abcdef/data/images/a.png"),
    ("lakefs://key:secret@repo/main/data", "lakefs://***@repo/main/data"),
    # no URL: unchanged
    ("demo", "demo"),
    ("/data/sets/camvid", "/data/sets/camvid"),
    ("C:\\data\\set.zip", "C:\\data\\set.zip"),
    ("mail user@example.org about it", "mail user@example.org about it"),
    ("https://example.org/d.zip", "https://example.org/d.zip"),
    ("ratio=0.25 and key words", "ratio=0.25 and key words"),
    ("", ""),
]


@pytest.mark.parametrize("text, expected", REDACTIONS)
def test_redaction_table(text, expected):
    assert redact_text(text) == expected
    assert redact(text) == expected  # the data sources' name for it
    assert redact_text(expected) == expected  # redacting twice changes nothing


def test_secret_parameter_names():
    for name in (
        "X-Amz-Signature",
        "x-amz-credential",
        "X-Amz-Security-Token",
        "token",
        "access_token",
        "key",
        "api_key",
        "API-KEY",
        "sig",
        "signature",
        "password",
        "passwd",
        "secret",
        "client_secret",
        "refresh_token",
        "X-Goog-Signature",
    ):
        assert is_secret_param(name), name
    for name in (
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Algorithm",
        "sv",
        "se",
        "sp",
        "page",
        "format",
        "keyword",
        "monkey",
        "prefix",
        "versionId",
    ):
        assert not is_secret_param(name), name


def test_secret_environment_values_are_masked_anywhere(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ENV_SECRET)
    monkeypatch.setenv("LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY", "lakectl-s3cr3t-value")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-t0ken-value")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAPUBLICID")  # an id, not a secret
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false-but-long")  # TOKEN is not a word of this name
    text = f"a={ENV_SECRET}; b=lakectl-s3cr3t-value, c=session-t0ken-value AKIAPUBLICID false-but-long"
    assert redact_text(text) == "a=***; b=***, c=*** AKIAPUBLICID false-but-long"
    assert redact_value({"x": [f"http://h/?q={ENV_SECRET}", 3, None], "y": ("http://u:p@h/",)}) == {
        "x": ["http://h/?q=***", 3, None],
        "y": ("http://***@h/",),
    }


def test_log_records_are_redacted_message_arguments_and_traceback(caplog):
    install_log_redaction()
    log = logging.getLogger("segmodels.test_secrets")
    with caplog.at_level(logging.INFO):
        log.info("fetching %s", f"http://{USER}:{PASSWORD}@host/data.zip")
        try:
            raise ValueError(f"failed on https://h/d.zip?X-Amz-Signature={SIGNATURE}")
        except ValueError:
            log.exception("download of %s failed", "https://h/d.zip")
    assert caplog.records[0].getMessage() == "fetching http://***@host/data.zip"
    assert PASSWORD not in caplog.text and USER not in caplog.text and SIGNATURE not in caplog.text
    assert "X-Amz-Signature=***" in caplog.text
    # a handler filter does the same for records made elsewhere (logging.makeLogRecord)
    record = logging.makeLogRecord({"msg": "to %s", "args": (f"http://u:{PASSWORD}@h/",)})
    assert RedactingFilter().filter(record) and record.getMessage() == "to http://***@h/"
    assert redact_record(logging.makeLogRecord({"msg": "no secret %d", "args": (1,)})).args == (1,)


def test_an_environment_interpolation_keeps_the_source_out_of_the_command_line(monkeypatch):
    """The way to keep a presigned URL out of `mlflow run`'s own record of -P values: name an environment
    variable (`-P source='${oc.env:DATA_URL}'`); the step reads the URL and records it masked."""
    monkeypatch.setenv("SEGMODELS_TEST_DATA_URL", PRESIGNED)
    cfg = load_config("ingest", step_overrides("ingest", ["--source", "${oc.env:SEGMODELS_TEST_DATA_URL}"]))
    assert cfg.source == PRESIGNED
    assert lineage.recorded_config(cfg).source == PRESIGNED_REDACTED


def test_a_url_source_names_its_data_set_after_its_path_never_its_query():
    data = load_config("ingest").data
    assert named_after_url(data, "https://h/sets/shapes?token=abc").name == "shapes"
    assert named_after_url(data, "https://h/d/data.zip?X-Amz-Credential=AKIA/2024/s3/aws4_request&sig=x").name == "data"
    for source in ("https://u:p@h/sets/shapes.zip", "/local/shapes", "demo", "lakefs://repo/main/data"):
        assert named_after_url(data, source) is data  # the name prepare gives it is fine as it is
    named = load_config("ingest", ["data.name=mine"]).data
    assert named_after_url(named, "https://h/sets/shapes?token=abc") is named


# -- the ingest step, end to end -----------------------------------------------------------------------------


class Server:
    """An http server on 127.0.0.1 serving /data.zip to a request with the right basic auth or signature."""

    def __init__(self, archive: bytes, user: str = USER, password: str = PASSWORD):
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        payload = archive

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                if parts.path != "/data.zip":
                    self.send_error(404)
                elif self.headers.get("Authorization") != expected and query.get("X-Amz-Signature") != [SIGNATURE]:
                    self.send_response(401 if "X-Amz-Signature" not in query else 403)
                    self.send_header("WWW-Authenticate", 'Basic realm="data"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/zip")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    make_folder_source(root / "shapes", count=6)
    archive = shutil.make_archive(str(root / "data"), "zip", root_dir=root, base_dir="shapes")
    served = Server(Path(archive).read_bytes())
    yield served
    served.close()


def basic_auth_url(server, password: str = PASSWORD) -> str:
    return f"http://{USER}:{password}@{server.base}/data.zip"


def presigned_url(server, signature: str = SIGNATURE) -> str:
    """A presigned-style URL; the credential's slashes unencoded, so that its last "/" part is in the query."""
    return (
        f"http://{server.base}/data.zip?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={ACCESS_KEY}"
        f"/20240101/us-east-1/s3/aws4_request&X-Amz-Date={AMZ_DATE}&X-Amz-Expires=3600"
        f"&token={SESSION_TOKEN}&X-Amz-Signature={signature}"
    )


@pytest.fixture
def step_env(lakefs, lakefs_settings, repo_name, tmp_path, monkeypatch, new_sqlite_store):
    """The step's environment: lakeFS through LAKECTL_*, AWS credentials, a sqlite MLflow store in tmp_path."""
    monkeypatch.setenv("LAKECTL_SERVER_ENDPOINT_URL", lakefs_settings.endpoint)
    monkeypatch.setenv("LAKECTL_CREDENTIALS_ACCESS_KEY_ID", lakefs_settings.access_key_id)
    monkeypatch.setenv("LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY", lakefs_settings.secret_access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ENV_SECRET)
    lakefs.ensure_repository(repo_name, default_branch="main")
    db = tmp_path / "mlflow.db"
    mlflow.set_tracking_uri(new_sqlite_store(db))
    mlflow.set_experiment(
        experiment_id=mlflow.create_experiment("secrets", artifact_location=(tmp_path / "mlartifacts").as_uri())
    )
    return {
        "db": db,
        "artifacts": tmp_path / "mlartifacts",
        "repo": repo_name,
        "lakefs": lakefs,
        "head": lakefs.resolve_commit(repo_name, "main"),
        "secrets": [lakefs_settings.secret_access_key],
    }


def step_args(source: str, repo: str) -> list[str]:
    """The ingest step's command line, with a config value that takes a secret from the environment."""
    return [
        "--source",
        source,
        "--repo",
        repo,
        "--data.s3_endpoint_url",
        "http://minio.local:9000/?note=${oc.env:AWS_SECRET_ACCESS_KEY}",
    ]


def run_in_process(args: list[str], capsys, caplog) -> tuple[int, str]:
    """Run the step as its script does; its exit status and everything it printed and logged."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logging.getLogger().addHandler(handler)
    status = 0
    try:
        with caplog.at_level(logging.DEBUG):
            run_step_cli("ingest", args)
    except SystemExit as exit_info:
        status = exit_info.code
    finally:
        logging.getLogger().removeHandler(handler)
    captured = capsys.readouterr()
    records = "\n".join(f"{record.getMessage()} {record.exc_text or ''}" for record in caplog.records)
    return status, "\n".join([captured.out, captured.err, stream.getvalue(), caplog.text, records])


def the_run(client: MlflowClient):
    [run] = client.search_runs([mlflow.get_experiment_by_name("secrets").experiment_id])
    return run


def everything_recorded(client: MlflowClient, run, env: dict, tmp_path: Path) -> dict[str, str]:
    """Where -> text, for all that MLflow and lakeFS hold after the step."""
    found = {f"param {key}": f"{key}={value}" for key, value in run.data.params.items()}
    found |= {f"tag {key}": f"{key}={value}" for key, value in run.data.tags.items()}
    found |= {f"metric {key}": key for key in run.data.metrics}
    for index, dataset_input in enumerate(run.inputs.dataset_inputs):
        dataset = dataset_input.dataset
        found[f"dataset input {index}"] = " ".join(
            str(part)
            for part in (
                dataset.name,
                dataset.digest,
                dataset.source_type,
                dataset.source,
                dataset.schema,
                dataset.profile,
                *[f"{tag.key}={tag.value}" for tag in dataset_input.tags],
            )
        )
    downloaded = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / f"download-{run.info.run_id}")))
    for path in [*downloaded.rglob("*"), *env["artifacts"].rglob("*")]:
        if path.is_file():
            found[f"artifact {path}"] = path.read_bytes().decode("latin-1")
    for path in env["db"].parent.glob(env["db"].name + "*"):  # the database and any journal beside it
        found[f"database {path.name}"] = path.read_bytes().decode("latin-1")
    lakefs, repo = env["lakefs"], env["repo"]
    pending, seen = [lakefs.resolve_commit(repo, "main")], set()
    while pending:  # every commit of the branch, the ephemeral branch's merged commit included
        commit = lakefs.get_commit(repo, pending.pop())
        if commit.id in seen:
            continue
        seen.add(commit.id)
        found[f"lakeFS commit {commit.id[:12]}"] = f"{commit.message} {commit.metadata}"
        pending += commit.parents
    data_commit = run.data.tags.get(lineage.TAG_DATA_COMMIT)
    if data_commit:
        folder = lakefs.download_prefix(repo, data_commit, "data", dest=tmp_path / "lakefs-data")
        for path in folder.rglob("*"):
            if path.is_file() and path.suffix in (".yaml", ".csv", ".json", ".txt"):
                found[f"lakeFS object {path.name}"] = path.read_text()
    return found


def assert_nowhere(secrets: list[str], found: dict[str, str]) -> None:
    leaks = [f"{secret!r} in {where}" for where, text in found.items() for secret in secrets if secret in text]
    assert not leaks, leaks


@pytest.mark.parametrize("kind", ["basic auth", "presigned"])
def test_a_successful_ingest_records_the_source_without_its_credentials(
    kind, server, step_env, tmp_path, capsys, caplog
):
    url = basic_auth_url(server) if kind == "basic auth" else presigned_url(server)
    status, output = run_in_process(step_args(url, step_env["repo"]), capsys, caplog)
    assert status == 0, output
    client = MlflowClient()
    run = the_run(client)
    assert run.info.status == "FINISHED"
    found = everything_recorded(client, run, step_env, tmp_path)
    found["step output and logs"] = output
    secrets = [PASSWORD, USER, SIGNATURE, ACCESS_KEY, SESSION_TOKEN, ENV_SECRET, *step_env["secrets"]]
    assert_nowhere(secrets, found)

    # the source stays recorded, masked: host, path and the harmless parameters
    if kind == "basic auth":
        recorded = f"http://***@{server.base}/data.zip"
    else:
        recorded = (
            f"http://{server.base}/data.zip?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=***"
            f"&X-Amz-Date={AMZ_DATE}&X-Amz-Expires=3600&token=***&X-Amz-Signature=***"
        )
    assert run.data.params["source"] == recorded
    assert run.data.params["data.s3_endpoint_url"] == "http://minio.local:9000/?note=***"
    config = yaml.safe_load(
        Path(client.download_artifacts(run.info.run_id, "config/ingest.yaml", str(tmp_path / "config"))).read_text()
    )
    assert config["source"] == recorded and config["data"]["s3_endpoint_url"] == "http://minio.local:9000/?note=***"
    commit = step_env["lakefs"].get_commit(step_env["repo"], run.data.tags[lineage.TAG_DATA_COMMIT])
    assert commit.metadata["source"] == recorded and commit.metadata["mlflow_run_id"] == run.info.run_id
    assert commit.message == f"ingest data: 6 images from {recorded}"  # named after the URL's path, not its query
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "data"
    assert f"ingesting {recorded} into lakefs://{step_env['repo']}/main/data" in output
    assert f"committed lakefs://{step_env['repo']}/{commit.id}/data" in output


@pytest.mark.parametrize("kind", ["basic auth", "presigned"])
def test_a_refused_download_fails_in_one_line_without_the_credentials(kind, server, step_env, tmp_path, capsys, caplog):
    url = basic_auth_url(server, WRONG_PASSWORD) if kind == "basic auth" else presigned_url(server, "wr0ng-5ig")
    status, output = run_in_process(step_args(url, step_env["repo"]), capsys, caplog)
    assert status == 2, output
    code = "401" if kind == "basic auth" else "403"
    assert "segmodels ingest: error:" in output and f"{code} Client Error" in output
    assert f"ingesting {redact_text(url)}" in output and f"{server.base}/data.zip" in output  # it still says where
    client = MlflowClient()
    run = the_run(client)
    assert run.info.status == "FAILED"
    assert step_env["lakefs"].resolve_commit(step_env["repo"], "main") == step_env["head"]  # nothing committed
    found = everything_recorded(client, run, step_env, tmp_path)
    found["step output and logs"] = output
    secrets = [WRONG_PASSWORD, USER, "wr0ng-5ig", ACCESS_KEY, SESSION_TOKEN, ENV_SECRET, *step_env["secrets"]]
    assert_nowhere(secrets, found)
    assert run.data.params["source"] == redact_text(url) and "***" in run.data.params["source"]


@pytest.mark.slow  # two step processes (about 8 s); the in-process tests above check the same output and records
def test_the_step_script_prints_and_logs_no_credentials(server, step_env, tmp_path):
    """The user's view: `python steps/ingest.py --source <url with a refused password>` in a process of its own
    (the step's own log handler and error line), then a good password: stderr and stdout hold no secret."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    env.update(
        {
            "MLFLOW_TRACKING_URI": f"sqlite:///{step_env['db']}",
            "MLFLOW_EXPERIMENT_NAME": "secrets",
            "SEGMODELS_HOME": str(tmp_path / "home"),
        }
    )
    outputs = []
    for password, status in ((WRONG_PASSWORD, 2), (PASSWORD, 0)):
        completed = subprocess.run(
            [sys.executable, "steps/ingest.py", *step_args(basic_auth_url(server, password), step_env["repo"])],
            cwd=PROJECT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert completed.returncode == status, completed.stderr
        outputs.append(completed.stdout + completed.stderr)
    assert "segmodels ingest: error:" in outputs[0] and f"http://***@{server.base}/data.zip" in outputs[0]
    assert "committed lakefs://" in outputs[1]
    secrets = [WRONG_PASSWORD, PASSWORD, USER, ENV_SECRET, *step_env["secrets"]]
    assert_nowhere(secrets, {"first run's output": outputs[0], "second run's output": outputs[1]})
    client = MlflowClient()
    experiment = mlflow.get_experiment_by_name("secrets")
    for run in client.search_runs([experiment.experiment_id]):
        found = everything_recorded(client, run, step_env, tmp_path)
        assert_nowhere(secrets, found)


def test_tags_that_mlflow_run_set_with_a_token_are_masked(step_env, tmp_path, monkeypatch, capsys, caplog):
    """`mlflow run https://<token>@github.com/...` records the project URL in tags before the step starts; the
    step rewrites them masked (a -P parameter it cannot: the step warns, naming it)."""
    token = "ghp_s3cr3tT0kenValue"
    client = MlflowClient()
    experiment_id = mlflow.get_experiment_by_name("secrets").experiment_id
    run = client.create_run(
        experiment_id,
        tags={
            "mlflow.source.name": f"https://{token}@github.com/org/seg.git",
            "mlflow.gitRepoURL": f"https://{token}@github.com/org/seg.git",
        },
    )
    client.log_param(run.info.run_id, "note", f"https://h/x?token={token}")
    monkeypatch.setenv("MLFLOW_RUN_ID", run.info.run_id)
    cfg = load_config("ingest", [f"lakefs.repo={step_env['repo']}"])
    with caplog.at_level(logging.WARNING), lineage.step_run("ingest", cfg):
        pass
    tags = client.get_run(run.info.run_id).data.tags
    assert tags["mlflow.source.name"] == tags["mlflow.gitRepoURL"] == "https://***@github.com/org/seg.git"
    assert "parameter note was recorded by `mlflow run`" in caplog.text and token not in caplog.text


def test_main_hands_a_credential_to_its_child_through_the_environment(monkeypatch):
    """MLflow records a child run's parameters as main gives them: a secret-bearing value goes by environment
    variable, and the child's config still resolves to the real URL."""
    from segmodels.config import load_config
    from segmodels.pipeline.main import secrets_through_environment
    from segmodels.pipeline.params import step_overrides

    url = "http://user:s3cr3t@127.0.0.1:9/data.zip?X-Amz-Signature=abc123"
    monkeypatch.delenv("SEGMODELS_PARAM_SOURCE", raising=False)
    passed = secrets_through_environment({"source": url, "epochs": "3"})
    assert passed == {"source": "${oc.env:SEGMODELS_PARAM_SOURCE}", "epochs": "3"}
    assert "s3cr3t" not in str(passed) and "abc123" not in str(passed)
    try:
        assert load_config("ingest", step_overrides("ingest", ["--source", passed["source"]])).source == url
    finally:
        os.environ.pop("SEGMODELS_PARAM_SOURCE", None)
