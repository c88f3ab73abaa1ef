"""Hostile secrets, second round (issue 25, cases 1-4 and their siblings): a password with quotes, spaces, ``<>`` or
a backtick, credentials in the tracking URI, ``lakefs://`` URIs with user info, secret parameters under other names
(``jwt``, ``;jsessionid=``, percent-encoded names), URLs inside JSON, reprs, encoded queries and tracebacks. Masking
follows how urllib and requests read a URL. End to end: the ingest step in process, a real sqlite MLflow store, the
embedded lakeFS and an http server that wants the hostile password."""

from __future__ import annotations

import json
import logging
import shutil
import traceback
from pathlib import Path
from urllib.parse import quote, urlsplit

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from test_data_sources import make_folder_source
from test_secrets import (
    Server,
    assert_nowhere,
    everything_recorded,
    run_in_process,
    step_args,
    step_env,
    the_run,
)

from segmodels.cli import main
from segmodels.pipeline import run_step_cli
from segmodels.redaction import is_secret_param, redact_text, redact_url, shown
from segmodels.tracking import lineage
from segmodels.versioning import LakeFSError, LakeFSUri

__all__ = ["step_env"]  # a fixture used here

HOSTILE_USER = "h0stile-us3r"
HOSTILE_PASSWORD = "pa\"ss w0rd'<x>`y"  # every character that ended the old URL pattern before the "@"
PIECES = ['pa"ss', "w0rd'", "<x>`y", "w0rd", "pa%22ss"]  # what a mask that stops early would leave

HOSTILE = [
    # case 1: user info with quotes, a space, <>, a backtick; alone, in text, in JSON, in a repr
    (f"http://{HOSTILE_USER}:{HOSTILE_PASSWORD}@127.0.0.1:8000/d.zip", "http://***@127.0.0.1:8000/d.zip"),
    ('http://u:pa"ss w0rd@h/d.zip', "http://***@h/d.zip"),
    ("download failed for http://u:pa ss@h/d.zip: 401", "download failed for http://***@h/d.zip: 401"),
    (json.dumps({"source": 'http://u:pa"ss w0rd@h/d.zip', "n": 1}), '{"source": "http://***@h/d.zip", "n": 1}'),
    (repr({"source": 'http://u:it\'s "x"@h/d.zip'}), "{'source': 'http://***@h/d.zip'}"),
    ('<a href="http://u:p<w>@h/x">x</a>', '<a href="http://***@h/x">x</a>'),
    # a password with an unencoded / ? # ends the authority early (no client reads a host there): masked to the @
    ("http://u:pa/ss@h/d.zip", "http://***@h/d.zip"),
    ("http://u:pa?ss@h/d.zip", "http://***@h/d.zip"),
    ("http://u:pa#ss@h:81/d.zip", "http://***@h:81/d.zip"),
    ("http://u:pa\\ss@h/d.zip", "http://***@h/d.zip"),
    # other schemes and hosts: ftp, s3 key:secret, user without password, IPv6
    ("ftp://u:p w@ftp.example.org/pub/x", "ftp://***@ftp.example.org/pub/x"),
    ("s3://AKIA:wJal rXUt@bucket/prefix/", "s3://***@bucket/prefix/"),
    ('https://tok"en@github.com/o/r.git', "https://***@github.com/o/r.git"),
    ("http://u:p'w@[::1]:8080/x", "http://***@[::1]:8080/x"),
    ("lakefs://key:sec ret@repo/main/data", "lakefs://***@repo/main/data"),
    # case 4: other secret parameters, path parameters, encoded and case-varied names, HTML-escaped &
    ("https://h/d?jwt=a&auth_key=b&hmac=c&page=2", "https://h/d?jwt=***&auth_key=***&hmac=***&page=2"),
    ("https://h/app;jsessionid=ABC123?x=1", "https://h/app;jsessionid=***?x=1"),
    ("https://h/a;JSESSIONID=ABC/b;v=2", "https://h/a;JSESSIONID=***/b;v=2"),
    (
        "https://h/d?X%2DAmz%2DSignature=abc&%73ig=def&%2573ig=ghi",
        "https://h/d?X%2DAmz%2DSignature=***&%73ig=***&%2573ig=***",
    ),
    ("https://h/d?SiG=a&JWT=b&PHPSESSID=c&authKey=d", "https://h/d?SiG=***&JWT=***&PHPSESSID=***&authKey=***"),
    ("https://h/d?a=1&amp;sig=abc&amp;b=2", "https://h/d?a=1&amp;sig=***&amp;b=2"),
    ("GET /app;jsessionid=ABC?jwt=x HTTP/1.1", "GET /app;jsessionid=***?jwt=*** HTTP/1.1"),
    # percent-encoded URLs and queries inside a URL or text
    ("https://h/cb?next=https%3A%2F%2Fu%3Apw%40h2%2F&x=1", "https://h/cb?next=https%3A%2F%2F***%40h2%2F&x=1"),
    ("https://h/cb?next=%2Fd.zip%3Fsig%3Dabc&x=1", "https://h/cb?next=%2Fd.zip%3Fsig%3D***&x=1"),
    # nothing secret: unchanged
    ("https://medium.com/@user/post", "https://medium.com/@user/post"),
    ("https://unpkg.com/@babel/core@7.0.0/x.js", "https://unpkg.com/@babel/core@7.0.0/x.js"),
    ("endpoint http://127.0.0.1:5000 refused", "endpoint http://127.0.0.1:5000 refused"),
    ("https://h/a;v=1?next=%2Fhome%3Fpage%3D2", "https://h/a;v=1?next=%2Fhome%3Fpage%3D2"),
    ("mail user@example.org about it", "mail user@example.org about it"),
]


@pytest.mark.parametrize("text, expected", HOSTILE)
def test_hostile_redaction_table(text, expected):
    assert redact_text(text) == expected
    assert redact_text(expected) == expected


def test_masking_agrees_with_how_urllib_reads_the_user_info():
    """Whatever urllib reads as user name and password is gone from the masked URL, host and path stay."""
    for password in (HOSTILE_PASSWORD, "p@ss", "a b", "x'y\"z", "`rm -rf`", "%22q%20", "<b>", "日本語パス"):
        url = f"https://{HOSTILE_USER}:{password}@host.example:8443/p/d.zip?x=1"
        parts = urlsplit(url)
        assert (parts.username, parts.password) == (HOSTILE_USER, password)
        masked = redact_url(url)
        assert masked == "https://***@host.example:8443/p/d.zip?x=1", password
        assert password not in redact_text(f"error: {url!r} failed"), password


def test_secret_parameter_names_second_round():
    for name in (
        "jwt",
        "auth_key",
        "authKey",
        "hmac",
        "jsessionid",
        "JSESSIONID",
        "PHPSESSID",
        "session_id",
        "X%2DAmz%2DSignature",
        "%73ig",
        "%2573ig",
        "amp;sig",
        "token[]",
        "id_token",
        "x.amz.signature",
    ):
        assert is_secret_param(name), name
    for name in ("page", "keyword", "monkey", "v", "session_start", "author", "X-Amz-Date", "next"):
        assert not is_secret_param(name), name


def test_a_secret_in_a_traceback_is_masked_in_every_frame():
    """A URL quoted in several lines of a traceback (the source line, the message, a chained exception)."""
    url = f"http://{HOSTILE_USER}:{HOSTILE_PASSWORD}@h/d.zip"
    try:
        try:
            raise ValueError(f"cannot open {url}")
        except ValueError as error:
            raise RuntimeError({"source": url, "detail": [url]}) from error
    except RuntimeError:
        text = traceback.format_exc()
    masked = redact_text(text)
    assert masked.count("http://***@h/d.zip") == 3
    assert_nowhere([HOSTILE_USER, *PIECES], {"traceback": masked})


def test_shown_values_are_redacted_one_line_and_short():
    assert shown("http://u:pa ss@h/x") == "http://***@h/x"
    long = "x" * 500
    assert shown(long) == "x" * 80 + "... (500 characters)"
    assert "\n" not in shown("a\nb")


# -- case 1 end to end: a hostile password through the ingest step ---------------------------------------------


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    make_folder_source(root / "shapes", count=6)
    archive = shutil.make_archive(str(root / "data"), "zip", root_dir=root, base_dir="shapes")
    served = Server(Path(archive).read_bytes(), HOSTILE_USER, HOSTILE_PASSWORD)
    yield served
    served.close()


def hostile_secrets(password: str, env: dict) -> list[str]:
    return [password, HOSTILE_USER, quote(password), quote(password, safe=""), *PIECES, *env["secrets"]]


@pytest.mark.parametrize("password, status", [(HOSTILE_PASSWORD, 0), ("wr0ng \"pa55' <x>`", 2)])
def test_a_hostile_password_is_masked_everywhere_the_ingest_step_records(
    password, status, hostile_server, step_env, tmp_path, capsys, caplog, monkeypatch
):
    """The issue's repro: SRC='http://u:pa"ss w0rd@127.0.0.1:PORT/d.zip', -P source='${oc.env:SRC}'; the right
    password ingests, a wrong one fails in one line: neither leaves any piece of the password or user anywhere."""
    url = f"http://{HOSTILE_USER}:{password}@{hostile_server.base}/data.zip"
    monkeypatch.setenv("SEGMODELS_TEST_SRC", url)
    status_seen, output = run_in_process(step_args("${oc.env:SEGMODELS_TEST_SRC}", step_env["repo"]), capsys, caplog)
    assert status_seen == status, output
    client = MlflowClient()
    run = the_run(client)
    found = everything_recorded(client, run, step_env, tmp_path)
    found["step output and logs"] = output
    assert_nowhere(hostile_secrets(password, step_env), found)
    recorded = f"http://***@{hostile_server.base}/data.zip"
    assert f"ingesting {recorded} into" in output
    if status == 0:
        assert run.info.status == "FINISHED"
        commit = step_env["lakefs"].get_commit(step_env["repo"], run.data.tags[lineage.TAG_DATA_COMMIT])
        assert commit.metadata["source"] == recorded and commit.message.endswith(recorded)
    else:
        assert run.info.status == "FAILED" and "401 Client Error" in output
        assert step_env["lakefs"].resolve_commit(step_env["repo"], "main") == step_env["head"]


# -- case 3: lakefs:// URIs with user info, and segmodels lineage's argument ------------------------------------

LAKEFS_SECRET = "lk-s3cr3t'pa55 w0rd"
LAKEFS_WITH_USER_INFO = [
    f"lakefs://AKIAUSERINFO:{LAKEFS_SECRET}@{{repo}}/main/data",
    f"lakefs://AKIAUSERINFO:{LAKEFS_SECRET}/x@{{repo}}/main/data",
]  # a "/" in the password


@pytest.mark.parametrize("template", LAKEFS_WITH_USER_INFO)
def test_a_lakefs_uri_with_user_info_is_refused_in_one_line_without_it(template):
    with pytest.raises(LakeFSError) as refused:
        LakeFSUri.parse(template.format(repo="repo"))
    message = str(refused.value)
    assert message.startswith("lakefs://***@repo/main/data: a lakeFS URI takes no user info") and "\n" not in message
    assert_nowhere(["AKIAUSERINFO", *LAKEFS_SECRET.split()], {"message": message})
    assert LakeFSUri.parse("lakefs://repo/main@/data") == LakeFSUri("repo", "main@", "data")  # a ref with @ stays


def test_a_malformed_lakefs_uri_is_named_cut_short():
    with pytest.raises(LakeFSError) as refused:
        LakeFSUri.parse("lakefs://Not_A_Repo/main/" + "x" * 500)
    assert "'Not_A_Repo' is not a lakeFS repository name" in str(refused.value)
    assert len(str(refused.value)) < 250 and "(525 characters)" in str(refused.value)


def run_step(step: str, args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        run_step_cli(step, args)
    captured = capsys.readouterr()
    return exited.value.code, captured.out + captured.err


@pytest.mark.parametrize("step, parameter", [("ingest", "--source"), ("train", "--data_ref"), ("infer", "--data_ref")])
def test_a_step_refuses_a_lakefs_uri_with_user_info_in_one_line(step, parameter, step_env, capsys, caplog):
    for template in LAKEFS_WITH_USER_INFO:
        uri = template.format(repo=step_env["repo"])
        args = [parameter, uri, "--repo", step_env["repo"]] + (
            ["--model_uri", "models:/nothing/1"] if step == "infer" else []
        )
        with caplog.at_level(logging.DEBUG):
            status, output = run_step(step, args, capsys)
        assert status == 2, output
        [line] = output.strip().splitlines()
        assert line.startswith(f"segmodels {step}: error: ") and f"lakefs://***@{step_env['repo']}/main/data" in line
        assert_nowhere(["AKIAUSERINFO", *LAKEFS_SECRET.split()], {"output": output, "logs": caplog.text})
        assert step_env["lakefs"].resolve_commit(step_env["repo"], "main") == step_env["head"]  # nothing moved


def test_a_lakefs_artifact_uri_with_user_info_is_refused_without_it():
    from mlflow.exceptions import MlflowException

    from segmodels.lakefs_artifacts import LakeFSArtifactRepository

    with pytest.raises(MlflowException) as refused:
        LakeFSArtifactRepository(LAKEFS_WITH_USER_INFO[0].format(repo="repo"))
    assert "lakefs://***@repo/main/data: a lakeFS URI takes no user info" in refused.value.message
    assert_nowhere(["AKIAUSERINFO", *LAKEFS_SECRET.split()], {"message": refused.value.message})


@pytest.mark.parametrize(
    "ref",
    [
        "http://u:pw-s3cr3t@x/y",
        f"lakefs://AKIAUSERINFO:{LAKEFS_SECRET}@repo/main",
        "models:/m/1?token=pw-s3cr3t",
        f"lakefs://repo/{'a' * 64}?sig=pw-s3cr3t",
    ],
)
def test_lineage_refuses_an_argument_with_credentials_without_echoing_them(ref, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["lineage", ref])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("segmodels lineage: error: ") and "holds credentials" in captured.err
    assert_nowhere(["pw-s3cr3t", "AKIAUSERINFO", *LAKEFS_SECRET.split()], {"stderr": captured.err})


def test_lineage_names_a_long_argument_cut_short(tmp_path, capsys, new_sqlite_store):
    mlflow.set_tracking_uri(new_sqlite_store(tmp_path / "mlflow.db"))
    MlflowClient().search_experiments()  # the store made (MLflow logs that) before the command
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["lineage", "f" * 5000])
    captured = capsys.readouterr()
    assert exited.value.code == 2 and captured.err.count("\n") == 1
    assert "f" * 80 + "... (5000 characters)" in captured.err and len(captured.err) < 400


# -- case 2: credentials in MLFLOW_TRACKING_URI and the run report's links ---------------------------------------


TRACKING_URIS = [
    "http://rep0rt-user:rep0rt-pw@mlflow.example:5000",
    'http://rep0rt-user:rep0rt"pw x@mlflow.example:5000',
    "http://rep0rt-user:rep0rt#pw@mlflow.example:5000",  # a "#" or "/" in the password: urllib cuts the authority
    "http://rep0rt-user:rep0rt/pw@mlflow.example:5000",
    "https://rep0rt-user:rep0rt-pw@mlflow.example:5000/?token=rep0rt-tok",
]


def test_the_run_report_links_runs_without_the_tracking_credentials(tmp_path, monkeypatch, new_sqlite_store):
    from segmodels.pipeline.main import StepOutcome
    from segmodels.pipeline.report import html_page, markdown, report_rows

    mlflow.set_tracking_uri(new_sqlite_store(tmp_path / "mlflow.db"))
    client = MlflowClient()
    experiment = client.create_experiment("report", artifact_location=(tmp_path / "artifacts").as_uri())
    ingest = client.create_run(experiment)
    client.log_param(ingest.info.run_id, "source", f"http://{HOSTILE_USER}:{HOSTILE_PASSWORD}@h/d.zip")
    infer = client.create_run(experiment)
    client.log_param(infer.info.run_id, "model_uri", "runs:/0a1b/model?token=rep0rt-tok")
    outcomes = [
        StepOutcome("ingest", client.get_run(ingest.info.run_id), None, 1.0),
        StepOutcome("infer", client.get_run(infer.info.run_id), None, 2.0),
    ]
    for tracking_uri in TRACKING_URIS:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
        mlflow.set_tracking_uri(tracking_uri)
        rows = report_rows(outcomes)
        report = {"report.md": markdown(rows, "main run x", []), "report.html": html_page(rows, "main run x", {})}
        link = rows[0]["link"]
        assert link.startswith(f"{tracking_uri.split(':')[0]}://mlflow.example:5000"), link
        assert link.endswith(f"#/experiments/{experiment}/runs/{ingest.info.run_id}"), link
        assert_nowhere(
            [
                "rep0rt-user",
                "rep0rt-pw",
                'rep0rt"pw',
                "rep0rt#pw",
                "rep0rt/pw",
                "pw x",
                "rep0rt-tok",
                HOSTILE_USER,
                *PIECES,
            ],
            report,
        )


# -- an http source whose authority no client can read: requests' own message quotes it, unmasked -------------------

BROKEN_AUTHORITIES = [
    f"http://{HOSTILE_USER}:pa/ss-s3cr3t@127.0.0.1:9/data.zip",  # requests: "'h0stile-us3r:pa' is not a valid host"
    f"http://{HOSTILE_USER}:pa?ss-s3cr3t@127.0.0.1:9/data.zip",
    f"http://{HOSTILE_USER}:pa#ss-s3cr3t@127.0.0.1:9/data.zip",
    f"http://{HOSTILE_USER}:ss-s3cr3t@:9/data.zip",  # no host
    f"http://{HOSTILE_USER}:ss-s3cr3t@127.0.0.1:99999/data.zip",  # port out of range
    f"http://{HOSTILE_USER}:ss-s3cr3t@.x/data.zip",  # requests: InvalidURL("URL has an invalid label.")
    f"http://{HOSTILE_USER}:ss-s3cr3t@a..b/data.zip",  # urllib3: LocationParseError, not a requests error
    f"http://{HOSTILE_USER}:pa[ss-s3cr3t@127.0.0.1:9/data.zip",  # urlsplit: ValueError (was a traceback)
]


@pytest.mark.parametrize("url", BROKEN_AUTHORITIES)
def test_an_http_source_whose_authority_is_no_host_is_refused_in_one_line_without_it(url, step_env, capsys, caplog):
    """A password with an unencoded / ? # [ cuts the authority short; requests then raised InvalidURL("Failed to
    parse: 'h0stile-us3r:pa' is not a valid host or port"), a message with no URL in it for masking to find."""
    with caplog.at_level(logging.DEBUG):
        status, output = run_step("ingest", ["--source", url, "--repo", step_env["repo"]], capsys)
    assert status == 2, output
    [line] = output.strip().splitlines()
    assert line.startswith("segmodels ingest: error: http://***@") and "not a valid http(s) URL" in line, line
    assert_nowhere([HOSTILE_USER, "s3cr3t", "pa/", "pa?", "pa#", "pa["], {"output": output, "logs": caplog.text})
    assert step_env["lakefs"].resolve_commit(step_env["repo"], "main") == step_env["head"]  # nothing moved


def test_a_source_that_urllib_cannot_split_is_refused_in_one_line(tmp_path):
    """An unclosed [ in a password: urlsplit raises ValueError("Invalid IPv6 URL") when reading the scheme (the
    ingest step's data set naming, segmodels/dataset_store.py, splits it first and still raises that)."""
    from segmodels.data.errors import DataValidationError
    from segmodels.data.sources import resolve_source

    with pytest.raises(DataValidationError) as refused:
        resolve_source(f"http://{HOSTILE_USER}:pa[ss-s3cr3t@h/data.zip", tmp_path, lakefs=None, s3_endpoint_url=None)
    assert str(refused.value).startswith("http://***@h/data.zip: not a valid http(s) URL"), refused.value
    assert_nowhere([HOSTILE_USER, "s3cr3t"], {"message": str(refused.value)})
    assert not any(tmp_path.iterdir())  # nothing downloaded, nothing left


def test_a_password_percent_encoded_as_the_refusal_says_ingests(step_env, tmp_path, capsys, caplog):
    """The refusal's advice works as printed: the same password with %2F %3F %23 %40 %5B logs in."""
    password = "pa/ss?x#y@z[w"
    root = tmp_path / "served"
    make_folder_source(root / "shapes", count=6)
    served = Server(
        Path(shutil.make_archive(str(root / "data"), "zip", root_dir=root, base_dir="shapes")).read_bytes(),
        HOSTILE_USER,
        password,
    )
    try:
        url = f"http://{HOSTILE_USER}:{quote(password, safe='')}@{served.base}/data.zip"
        status, output = run_in_process(["--source", url, "--repo", step_env["repo"]], capsys, caplog)
    finally:
        served.close()
    assert status == 0, output
    assert_nowhere([password, quote(password, safe="")], {"output": output})
