"""Bounded work for hostile ingest input (issue 25): YAML alias bombs, archive bombs, downloads that never end,
COCO annotation floods, long file names, keys that are both a file and a folder, duplicate archive members.

Resource cases run in a child process (`run_isolated`: peak RSS and wall time measured there, an address-space
guard) and are asserted with generous bounds; each is refused in one line naming the file or value.
"""

from __future__ import annotations

import yaml
from test_data_sources import make_folder_source
from test_hostile_ingest import Case, check_isolated, refusal, run_isolated

from segmodels.data.classes import parse_classes
from segmodels.data.safe_yaml import AliasRefused, load_yaml

# -- YAML: aliases refused, values clipped in messages ---------------------------------------------------------------


def alias_bomb(levels: int = 9) -> str:
    """A "billion laughs" class file: 9 strings, each level 9 aliases of the one below (9**levels strings)."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join([*lines, f"classes: [*a{levels - 1}]"]) + "\n"


def test_yaml_aliases_are_refused_before_expansion():
    assert len(alias_bomb()) < 450
    try:
        load_yaml(alias_bomb())
    except AliasRefused as error:
        assert str(error) == "YAML alias *a0 (line 2): aliases are not accepted"
    else:
        raise AssertionError("an alias was expanded")
    assert isinstance(AliasRefused("x"), yaml.YAMLError)
    assert load_yaml("classes: [a, b]\nanchored: &only 3\n") == {"classes": ["a", "b"], "anchored": 3}


def test_an_alias_bomb_class_file_is_refused_in_one_short_line(tmp_path):
    source = make_folder_source(tmp_path / "bomb", count=4)
    (source / "classes.yaml").write_text(alias_bomb())
    results = run_isolated({"bomb": Case(source, "classes.yaml", ("aliases are not accepted",), summary=True)},
                           tmp_path)
    result = results["bomb"]
    reason = check_isolated(result, Case(source, "classes.yaml", ("aliases are not accepted",), summary=True))
    assert len(result["error"]) < 400, result["error"]  # was 355 MB: the expanded entries formatted whole
    assert result["rss_growth_mib"] < 200 and result["seconds"] < 30, result  # was 1.65 GB
    assert reason.startswith(f"{source / 'classes.yaml'}: unreadable class file (AliasRefused: YAML alias *a0")


def test_class_entries_are_clipped_in_messages(tmp_path):
    huge = {"colour": ["x" * 10_000] * 1000}
    for entries, start in [([huge], "class entry {'colour': ['xxx"), ([["y" * 10_000]], "class entry ['yyy")]:
        try:
            parse_classes(entries)
        except ValueError as error:
            message = str(error)
        assert message.startswith(start) and len(message) < 160, message[:300]
    source = make_folder_source(tmp_path / "long", count=4)
    (source / "classes.yaml").write_text(yaml.safe_dump({"classes": [["z" * 100_000]]}))
    message = str(refusal(source, tmp_path / "out"))
    assert "is neither a name nor a mapping" in message and len(message) < 400, message[:500]


def test_dataset_yaml_and_model_yaml_with_aliases_are_refused(tmp_path):
    """dataset.yaml and model.yaml come back from lakeFS branches others can write: read without aliases too."""
    from segmodels.data import DataValidationError, load_dataset_info
    from segmodels.models.package import load_spec

    (tmp_path / "dataset.yaml").write_text(alias_bomb().replace("classes: [", "ignore_index: 255\nclasses: ["))
    try:
        load_dataset_info(tmp_path)
    except DataValidationError as error:
        assert str(error) == f"{tmp_path / 'dataset.yaml'}: invalid YAML (AliasRefused)"
    else:
        raise AssertionError("dataset.yaml with aliases was read")
    (tmp_path / "model.yaml").write_text(alias_bomb().replace("classes:", "architecture:"))
    try:
        load_spec(tmp_path)
    except yaml.YAMLError as error:
        assert isinstance(error, AliasRefused)
    else:
        raise AssertionError("model.yaml with aliases was read")
