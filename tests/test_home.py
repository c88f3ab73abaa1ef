"""Where segmodels keeps its local state (``segmodels.home``), and where infer writes by default."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from segmodels.home import HOME_ENV, embedded_server_dir, segmodels_home
from segmodels.pipeline.infer import default_output_dir, given_output_dir


@pytest.fixture
def user(tmp_path, monkeypatch) -> Path:
    """No SEGMODELS_HOME, HOME at ``tmp_path/home``, working directory ``tmp_path/work``: returns HOME."""
    monkeypatch.delenv(HOME_ENV, raising=False)
    (tmp_path / "home").mkdir()
    (tmp_path / "work").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path / "home"


def test_the_default_home_is_in_the_users_home_folder(user):
    assert segmodels_home() == user / ".segmodels"
    assert embedded_server_dir() == user / ".segmodels" / "lakefs"
    assert not (user / ".segmodels").exists(), "naming the home creates nothing"


def test_segmodels_home_overrides_everything(user, tmp_path, monkeypatch):
    Path(".segmodels").mkdir()
    monkeypatch.setenv(HOME_ENV, "elsewhere")
    assert segmodels_home() == tmp_path / "work" / "elsewhere", "relative: to the working directory"
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "state"))
    assert segmodels_home() == tmp_path / "state"
    assert segmodels_home(tmp_path / "given") == tmp_path / "given", "an explicit home wins over the variable"


def test_a_working_directory_that_has_its_own_state_keeps_it(user, tmp_path, caplog):
    """A project folder where segmodels kept ``./.segmodels`` (the former default) goes on using it."""
    Path(".segmodels").mkdir()
    with caplog.at_level(logging.INFO, logger="segmodels.home"):
        assert segmodels_home() == tmp_path / "work" / ".segmodels"
    assert any(str(tmp_path / "work" / ".segmodels") in record.getMessage() for record in caplog.records)


def test_a_file_named_segmodels_is_not_a_home(user):
    Path(".segmodels").write_text("not a folder")
    assert segmodels_home() == user / ".segmodels"


def test_the_home_follows_the_working_directory_only_where_state_exists(user, tmp_path, monkeypatch):
    """A fresh folder (as MLflow's temporary checkout of a git URL) uses ~/.segmodels, whatever the cwd."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    monkeypatch.chdir(checkout)
    assert segmodels_home() == user / ".segmodels"


def test_infer_writes_under_the_home_by_default(user, tmp_path, monkeypatch):
    assert given_output_dir("") is None
    assert default_output_dir("abc123") == user / ".segmodels" / "predictions" / "abc123"
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "state"))
    assert default_output_dir("abc123") == tmp_path / "state" / "predictions" / "abc123"
    assert given_output_dir("out") == tmp_path / "work" / "out", "a folder given: from the working directory"
    assert given_output_dir("~/out") == user / "out"


def test_infer_config_default_is_the_home(monkeypatch):
    from segmodels.config import load_config

    assert load_config("infer", []).output_dir == ""
