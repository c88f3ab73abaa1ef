"""The docker compose stack (docker-compose.yml, docker/) at the schema level, since no docker runs here:
pinned images, an MLflow server built at the client's version with nothing installed at container start,
health checks and the start order, a `docker compose up -d --wait` that can succeed with the one-shot jobs,
and the lakeFS setup job run for real against a fake lakeFS, twice, to show it is idempotent."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mlflow
import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((PROJECT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = PROJECT / "docker" / "mlflow.Dockerfile"
SETUP_SCRIPT = PROJECT / "docker" / "lakefs-setup.sh"
SETUP_JOB = "lakefs-setup"
ONE_SHOT = {name for name, service in SERVICES.items() if service.get("restart") == "no"}
LONG_RUNNING = set(SERVICES) - ONE_SHOT
PIN = {  # image name -> the form its tag must have
    "postgres": r"\d+\.\d+",  # major.minor
    "minio/minio": r"RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ",
    "minio/mc": r"RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ",
    "treeverse/lakefs": r"1\.\d+\.\d+",  # a 1.x release
    "curlimages/curl": r"\d+\.\d+\.\d+",
}


def split_image(image: str) -> tuple[str, str]:
    """``name[:tag][@digest]`` -> (name, tag); tag '' when there is none."""
    image = image.split("@")[0]
    name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    return name, tag


def dependencies(name: str) -> dict[str, str]:
    """A service's depends_on as {service: condition}; the short (list) form has no condition."""
    depends_on = SERVICES[name].get("depends_on", {})
    if isinstance(depends_on, list):
        return {dep: "service_started" for dep in depends_on}
    return {dep: spec.get("condition", "service_started") for dep, spec in depends_on.items()}


def upstream(name: str) -> set[str]:
    """Every service that must be ready before ``name`` starts, transitively."""
    seen, todo = set(), [name]
    while todo:
        for dep in dependencies(todo.pop()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def commands(service: dict) -> list[str]:
    """The service's command, entrypoint and health check test, each as one string."""
    parts = [service.get("command"), service.get("entrypoint"), service.get("healthcheck", {}).get("test")]
    return [" ".join(part) if isinstance(part, list) else part for part in parts if part]


def readme_compose_section() -> str:
    readme = (PROJECT / "README.md").read_text()
    return readme.split("### The docker compose stack", 1)[1].split("\n## ", 1)[0]


def readme_exports() -> dict[str, str]:
    return dict(re.findall(r"^export (\w+)=(\S+)$", readme_compose_section(), flags=re.M))


# -- the services, their images and the MLflow server image -------------------------------------------------


def test_the_stack_has_its_services():
    assert {"postgres", "minio", "minio-buckets", "lakefs", SETUP_JOB, "mlflow"} <= set(SERVICES)
    assert {"minio-buckets", SETUP_JOB} == ONE_SHOT


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_image_is_pinned(name):
    service = SERVICES[name]
    assert "image" in service or "build" in service, name
    if "image" not in service:
        return
    image, tag = split_image(service["image"])
    assert tag and tag != "latest", f"{name}: {service['image']} is not pinned to a version"
    assert image in PIN, f"{name}: no pin rule for {image}"
    assert re.fullmatch(PIN[image], tag), f"{name}: {service['image']} is not pinned as {PIN[image]}"


def test_the_mlflow_server_is_built_from_the_dockerfile():
    build = SERVICES["mlflow"]["build"]
    assert (PROJECT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


def test_the_dockerfile_pins_its_base_image_and_mlflow_at_the_clients_version():
    text = DOCKERFILE.read_text()
    [base] = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    image, tag = split_image(base)
    assert image == "python" and re.fullmatch(r"3\.\d+\.\d+-slim(-\w+)?", tag), base
    [version] = re.findall(r"\bmlflow==([\d.]+)", text)
    client = mlflow.__version__
    assert version.split(".")[:2] == client.split(".")[:2], f"server mlflow {version}, client {client}"
    major, minor = (int(part) for part in version.split(".")[:2])  # a new MLflow release must not install a
    declared = re.findall(r'"mlflow([<>=][^"]*)"', (PROJECT / "pyproject.toml").read_text())  # client the server is not
    assert declared == [f">={major}.{minor},<{major}.{minor + 1}"], declared
    installs = " ".join(re.findall(r"^RUN\s+(.*?)(?<!\\)$", text.replace("\\\n", " "), flags=re.M))
    assert "pip install" in installs and "psycopg2-binary==" in installs and "boto3==" in installs


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_no_service_installs_packages_at_start(name):
    for command in commands(SERVICES[name]):
        assert not re.search(r"\bpip3?\s+install\b|\buv\s+pip\b|\bapt-get\s+install\b|\bapk\s+add\b", command), (
            f"{name} installs packages at start: {command}"
        )


def test_the_mlflow_server_uses_postgres_and_minio():
    command = " ".join(SERVICES["mlflow"]["command"])
    assert "--backend-store-uri=postgresql://" in command and "--artifacts-destination=s3://mlflow-artifacts" in command
    assert SERVICES["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"


# -- health checks, start order and `up --wait` -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LONG_RUNNING))
def test_every_long_running_service_has_a_health_check(name):
    test = SERVICES[name].get("healthcheck", {}).get("test")
    assert test and test != ["NONE"], f"{name} has no health check"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_dependencies_wait_for_health_or_completion(name):
    for dep, condition in dependencies(name).items():
        assert dep in SERVICES, f"{name} depends on unknown {dep}"
        expected = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
        assert condition == expected, f"{name} -> {dep}: {condition}, expected {expected}"


def test_the_start_order_is_postgres_lakefs_setup_then_mlflow():
    assert dependencies("lakefs")["postgres"] == "service_healthy"
    assert dependencies(SETUP_JOB) == {"lakefs": "service_healthy"}
    assert dependencies("mlflow")[SETUP_JOB] == "service_completed_successfully"
    assert {"postgres", "minio", "minio-buckets", "lakefs", SETUP_JOB} <= upstream("mlflow")
    assert {"postgres", "minio", "minio-buckets"} <= upstream("lakefs")
    assert "mlflow" not in upstream(SETUP_JOB) and SETUP_JOB not in upstream("lakefs")


@pytest.mark.parametrize("job", sorted(ONE_SHOT))
def test_up_wait_waits_for_every_one_shot_job_to_complete(job):
    """``docker compose up --wait`` waits for a job to exit 0 only when a long-running service depends on it
    with ``service_completed_successfully``; otherwise its exit makes ``--wait`` fail."""
    adopters = [name for name in LONG_RUNNING if dependencies(name).get(job) == "service_completed_successfully"]
    assert adopters, f"no long-running service waits for {job}: `docker compose up --wait` would fail"


# -- the lakeFS setup job -------------------------------------------------------------------------------------


def test_the_setup_job_runs_the_setup_script_with_the_readmes_keys():
    job = SERVICES[SETUP_JOB]
    assert any(volume.split(":")[0] == "./docker/lakefs-setup.sh" for volume in job["volumes"])
    assert "/lakefs-setup.sh" in job["entrypoint"]
    env, exports = job["environment"], readme_exports()
    assert env["LAKECTL_SERVER_ENDPOINT_URL"] == "http://lakefs:8000"
    for key in ("LAKECTL_CREDENTIALS_ACCESS_KEY_ID", "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY"):
        assert env[key] == exports[key], key
    assert SERVICES["lakefs"]["environment"]["LAKEFS_DATABASE_TYPE"] == "postgres"  # why the job is needed


def test_the_setup_script_checks_the_state_before_it_sets_up():
    text = SETUP_SCRIPT.read_text()
    get = text.index("request GET /setup_lakefs")
    post = text.index("request POST /setup_lakefs")
    assert get < post and '"not_initialized"' in text[get:post]
    assert "/api/v1" in text and "GET /user" in text


class FakeLakeFS(BaseHTTPRequestHandler):
    """The setup API of a lakeFS with a Postgres database: no user until ``POST /setup_lakefs``."""

    requests: list[tuple[str, str, dict | None]]
    credentials: tuple[str, str] | None

    def log_message(self, *args):  # quiet
        pass

    def answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        server = type(self)
        server.requests.append(("GET", self.path, None))
        if self.path == "/api/v1/setup_lakefs":
            self.answer(200, {"state": "initialized" if server.credentials else "not_initialized"})
        elif self.path == "/api/v1/user":
            auth = self.headers.get("Authorization", "")
            given = base64.b64decode(auth.removeprefix("Basic ")).decode() if auth.startswith("Basic ") else ""
            if server.credentials and given == ":".join(server.credentials):
                self.answer(200, {"user": {"id": "admin", "creation_date": 0}})
            else:
                self.answer(401, {"message": "error authenticating request"})
        else:
            self.answer(404, {"message": "not found"})

    def do_POST(self):
        server = type(self)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server.requests.append(("POST", self.path, body))
        if self.path != "/api/v1/setup_lakefs":
            self.answer(404, {"message": "not found"})
        elif server.credentials:
            self.answer(409, {"message": "lakeFS already initialized"})
        else:
            key = body["key"]
            server.credentials = (key["access_key_id"], key["secret_access_key"])
            self.answer(200, {**key, "creation_date": 0})


@pytest.fixture
def fake_lakefs():
    if not (shutil.which("sh") and shutil.which("curl")):
        pytest.skip("running the setup script needs sh and curl")
    handler = type("Handler", (FakeLakeFS,), {"requests": [], "credentials": None})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def run_setup(endpoint: str, key_id: str, secret: str, home: Path) -> subprocess.CompletedProcess:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),  # HOME: no ~/.curlrc; no proxy variables
        "LAKECTL_SERVER_ENDPOINT_URL": endpoint,
        "LAKEFS_ADMIN_USER": "admin",
        "LAKECTL_CREDENTIALS_ACCESS_KEY_ID": key_id,
        "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY": secret,
    }
    return subprocess.run(["sh", str(SETUP_SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def test_the_setup_script_sets_up_once_and_is_a_no_op_the_second_time(fake_lakefs, tmp_path):
    server, endpoint = fake_lakefs
    env = SERVICES[SETUP_JOB]["environment"]
    key_id, secret = env["LAKECTL_CREDENTIALS_ACCESS_KEY_ID"], env["LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY"]

    first = run_setup(endpoint, key_id, secret, tmp_path)
    assert first.returncode == 0, first.stderr
    posts = [body for method, _, body in server.requests if method == "POST"]
    assert posts == [{"username": "admin", "key": {"access_key_id": key_id, "secret_access_key": secret}}]
    assert server.requests[0][:2] == ("GET", "/api/v1/setup_lakefs")  # the state is read before the POST
    assert server.requests[-1][:2] == ("GET", "/api/v1/user")  # and the keys are tried after it
    assert "created the lakeFS admin user" in first.stdout

    server.requests.clear()
    second = run_setup(endpoint, key_id, secret, tmp_path)
    assert second.returncode == 0, second.stderr
    assert [request[:2] for request in server.requests] == [("GET", "/api/v1/setup_lakefs"), ("GET", "/api/v1/user")]
    assert server.credentials == (key_id, secret)
    assert "already set up; nothing to do" in second.stdout


def test_the_setup_script_quotes_the_keys_and_fails_on_keys_lakefs_does_not_know(fake_lakefs, tmp_path):
    server, endpoint = fake_lakefs
    secret = 'se/cr"et\\key'  # a quote and a backslash reach lakeFS intact
    assert run_setup(endpoint, "AKIAFIRST", secret, tmp_path).returncode == 0
    assert server.credentials == ("AKIAFIRST", secret)

    other = run_setup(endpoint, "AKIAOTHER", "another-secret", tmp_path)
    assert other.returncode != 0
    assert "rejects the access key AKIAOTHER" in other.stderr
    assert server.credentials == ("AKIAFIRST", secret)  # nothing changed
