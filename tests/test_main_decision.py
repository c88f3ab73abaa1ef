"""main's last line says what register made of the model, and the fix it suggests for a challenger works when
typed exactly as printed (real ``mlflow run . -e main`` chains)."""

from __future__ import annotations

import re
import shlex

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from test_e2e_chain import Chain

from segmodels.data.demo import generate_demo_dataset

pytestmark = pytest.mark.slow
TINY = {"epochs": 1, "image_size": 32, "batch_size": 8, "overrides": "trainer.num_workers=0", "reuse_dirty": "true"}
HINT = "; -P register.force=true promotes it"


def last_main_line(result) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return [line for line in result.stderr.splitlines() if " segmodels main " in line][-1]


def test_a_challenger_is_named_and_the_printed_fix_promotes_it(tmp_path):
    chain = Chain(tmp_path)
    source = generate_demo_dataset(tmp_path / "source", num_images=24, image_size=32, seed=5)
    mlflow.set_tracking_uri(chain.env["MLFLOW_TRACKING_URI"])
    MlflowClient().create_experiment("e2e", artifact_location=(tmp_path / "artifacts").as_uri())
    try:

        def main(**params):
            return chain.mlflow_run("main", source=source, output_dir=tmp_path / "predictions", **{**TINY, **params})

        first = last_main_line(main())
        assert first.endswith("model models:/segmodels/1 became @champion (no @champion before)"), first
        # the same training again (seeded, CPU: the same score) does not beat the champion
        second = last_main_line(main(force="train"))
        assert " model models:/segmodels/2 is @challenger (" in second and "does not beat @champion version 1" in second
        assert second.endswith(HINT), second
        # the fix, typed as printed: -P register.force=true
        fix = shlex.split(second.rsplit("; ", 1)[1].removesuffix(" promotes it"))
        assert fix == ["-P", "register.force=true"]
        name, value = fix[1].split("=", 1)
        third = last_main_line(main(**{name: value}))
        promoted = re.search(r" model models:/segmodels/(\d+) became @champion \((?:[^;]*; )?force=true; ", third)
        assert promoted, third  # version 2, or a new one when the work tree changed meanwhile (train reran)
        assert str(MlflowClient().get_model_version_by_alias("segmodels", "champion").version) == promoted[1]
    finally:
        chain.stop_server()
