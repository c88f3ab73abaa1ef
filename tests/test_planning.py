"""experiment=auto: the fingerprint ingest records, the planning rules (fingerprint in, config out), and the train
step planning from a real data commit with the user's overrides winning over the plan."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from segmodels.config import load_config
from segmodels.data import prepare_dataset
from segmodels.data.demo import generate_demo_dataset
from segmodels.dataset_store import ingest
from segmodels.pipeline import run_step_cli
from segmodels.planning import PlanContext, PlanError, make_plan
from segmodels.versioning import settings as versioning_settings

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


def fingerprint(**changes) -> dict:
    """A fingerprint of 200 RGB 480x640 images, two classes (80% / 20%), objects of 60 px, upright."""
    base = {
        "version": 1,
        "images": {"train": 160, "val": 20, "test": 20},
        "size": {"median": [480, 640], "p10": [480, 640], "p90": [480, 640], "aspect": 1.333},
        "channels": "rgb",
        "intensity": {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3], "sampled": 48},
        "classes": [
            {"share": 0.8, "images": 160, "object_px": 400.0, "objects_per_image": 1.0},
            {"share": 0.2, "images": 150, "object_px": 60.0, "objects_per_image": 2.0},
        ],
        "binary_masks": True,
        "orientation_free": False,
    }
    return {**base, **changes}


def planned(fp: dict, device="cpu", pretrained=False, budget=10.0, seconds=0.05, **kwargs) -> dict:
    plan = make_plan(fp, PlanContext(budget, device, "unet_resnet18", pretrained), lambda *_: seconds, **kwargs)
    return {value.key: value.value for value in plan.values}


def test_size_is_the_median_image_within_the_devices_pixel_budget_aspect_kept():
    assert planned(fingerprint())["transforms.image_size"] == [224, 320]  # 480x640 scaled to <= 76,800 px
    assert planned(fingerprint(), device="cuda")["transforms.image_size"] == [416, 576]
    small = fingerprint(size={"median": [100, 120], "p10": [100, 120], "p90": [100, 120], "aspect": 1.2})
    assert planned(small)["transforms.image_size"] == [96, 128]  # within the budget: nearest multiples of 32


@pytest.mark.parametrize("object_px, lower", [(400.0, 0.19), (60.0, 0.19), (10.0, 0.09), (5.0, 0.08)])
def test_crop_scale_reaches_native_resolution_and_zooms_in_on_small_objects(object_px, lower):
    classes = [{"share": 0.8, "object_px": 900.0}, {"share": 0.2, "object_px": object_px}]
    assert planned(fingerprint(classes=classes))["transforms.train.scale"] == [lower, 1.0]
    big = fingerprint(
        size={"median": [2000, 2000], "p10": [2000, 2000], "p90": [2000, 2000], "aspect": 1.0},
        classes=[{"share": 0.9, "object_px": 900.0}, {"share": 0.1, "object_px": 300.0}],
    )
    assert planned(big)["transforms.train.scale"] == [0.08, 1.0]  # native crops would be 1/2000**2: floor 0.08


@pytest.mark.parametrize("free, turns", [(False, 0.0), (True, 0.5)])
def test_vertical_flips_and_turns_only_for_data_declared_orientation_free(free, turns):
    values = planned(fingerprint(orientation_free=free))
    assert values["transforms.train.hflip"] == 0.5
    assert values["transforms.train.vflip"] == values["transforms.train.rot90"] == turns


def test_normalisation_from_the_data_only_for_a_scratch_encoder():
    assert planned(fingerprint())["model.mean"] == [0.4, 0.5, 0.6]
    assert planned(fingerprint())["model.std"] == [0.2, 0.25, 0.3]
    assert "model.mean" not in planned(fingerprint(), pretrained=True)


@pytest.mark.parametrize(
    "shares, loss, weighted",
    [
        ([0.5, 0.5], "ce", False),
        ([0.8, 0.2], "ce", True),
        ([0.97, 0.03], "ce_dice", True),
        ([0.3, 0.3, 0.38, 0.02], "ce_dice", True),
        ([0.35, 0.33, 0.32], "ce", False),
    ],
)
def test_loss_weights_imbalanced_classes_and_adds_dice_for_rare_ones(shares, loss, weighted):
    values = planned(fingerprint(classes=[{"share": s, "object_px": 50.0} for s in shares]))
    assert values["loss"] == loss
    if loss == "ce":
        assert values["loss.class_weights"] == ("auto" if weighted else "null")
    else:
        assert ("class_weights" in values["loss.losses"][0]) == weighted and values["loss.losses"][1]["name"] == "dice"


def test_epochs_fill_the_budget_at_the_measured_speed():
    # 160 train + 20 val images at 50 ms: 8.33 s an epoch; 85% of 10 minutes = 510 s -> 61 epochs
    assert planned(fingerprint())["trainer.epochs"] == 61
    assert planned(fingerprint(), budget=20)["trainer.epochs"] == 122
    assert planned(fingerprint(), seconds=10.0)["trainer.epochs"] == 3  # never fewer than 3
    assert planned(fingerprint(), seconds=1e-6)["trainer.epochs"] == 300


def test_batch_size_and_the_lr_follow_device_data_and_encoder():
    assert planned(fingerprint())["trainer.batch_size"] == 8
    assert planned(fingerprint(), device="cuda")["trainer.batch_size"] == 16
    assert planned(fingerprint(images={"train": 10, "val": 2, "test": 0}))["trainer.batch_size"] == 2
    scratch, pretrained = planned(fingerprint()), planned(fingerprint(), pretrained=True)
    assert (scratch["optimizer.lr"], scratch["trainer.encoder_lr_scale"]) == (0.003, 1.0)
    assert (pretrained["optimizer.lr"], pretrained["trainer.encoder_lr_scale"]) == (0.001, 0.3)


def test_the_model_is_the_users_else_small_for_small_data():
    assert planned(fingerprint())["model"] == "unet_resnet18"
    many = fingerprint(images={"train": 5000, "val": 500, "test": 500})
    assert planned(many, device="cuda")["model"] == "unet_resnet34"
    assert "model" not in planned(many, device="cuda", user_chose_model=True)
    assert planned(many, pretrained=True)["model"] == "unet_resnet18"  # the model the weights file fits


@pytest.mark.slow
def test_a_weights_file_picks_the_model_whose_encoder_it_fits(tmp_path):
    import timm
    import torch

    from segmodels.pipeline import StepError
    from segmodels.pipeline.plan import model_for_weights

    weights = tmp_path / "mobilenetv3.pth"
    torch.save(timm.create_model("mobilenetv3_large_100").state_dict(), weights)
    assert model_for_weights(str(weights), "unet_resnet18") == "unet_mobilenetv3"
    resnet = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), resnet)
    assert model_for_weights(str(resnet), "unet_resnet18") == "unet_resnet18"
    junk = tmp_path / "junk.pth"
    torch.save({"layer.weight": torch.zeros(3, 3)}, junk)
    with pytest.raises(
        StepError,
        match=r"junk.pth: fits the encoder of no model config \(tried .*resnet18.*\); "
        r"name the model with -P model=<name>",
    ):
        model_for_weights(str(junk), "unet_resnet18")


def test_every_planned_value_is_a_valid_override_that_the_command_line_overrides():
    fp = fingerprint(classes=[{"share": 0.97, "object_px": 50.0}, {"share": 0.03, "object_px": 8.0}])
    plan = make_plan(fp, PlanContext(5, "cpu", "unet_resnet18", False), lambda *_: 0.05)
    cfg = load_config("train", [*plan.overrides(), "experiment=auto", "trainer.epochs=2", "transforms.image_size=64"])
    assert cfg.trainer.epochs == 2 and cfg.transforms.image_size == 64  # the user's values win
    assert cfg.loss.name == "combo" and cfg.loss.losses[0].class_weights == "auto"
    assert list(cfg.model.mean) == [0.4, 0.5, 0.6] and cfg.transforms.train.vflip == 0.0
    assert all(": " in rule for rule in plan.rules().values())


def test_a_fingerprint_without_sizes_or_classes_is_a_plan_error_saying_what_is_missing():
    with pytest.raises(PlanError, match="no fingerprint .* ingest it again"):
        make_plan(None, PlanContext(5, "cpu", "unet_resnet18", False), lambda *_: 0.05)
    with pytest.raises(PlanError, match="no class shares"):
        planned(fingerprint(classes=[]))


def test_ingest_records_the_fingerprint_in_dataset_yaml(tmp_path):
    source = generate_demo_dataset(tmp_path / "source", num_images=12, image_size=40, seed=3)
    cfg = load_config("ingest", ["data.orientation_free=true"])
    result = prepare_dataset(source, tmp_path / "out", cfg.data, on_error="fail", split_seed=0)
    document = yaml.safe_load((tmp_path / "out" / "dataset.yaml").read_text())["fingerprint"]
    assert document == result.info.extra["fingerprint"]
    assert document["size"]["median"] == [40, 40] and document["orientation_free"] is True
    assert document["images"]["train"] == result.info.splits["train"]
    assert document["channels"] == "rgb" and len(document["intensity"]["mean"]) == 3
    shares = [entry["share"] for entry in document["classes"]]
    assert abs(sum(shares) - 1.0) < 1e-3 and all(entry["object_px"] for entry in document["classes"] if entry["share"])
    train_images = [
        np.asarray(Image.open(p).convert("RGB"), dtype=float) / 255
        for p in sorted((tmp_path / "out" / "images" / "train").iterdir())
    ]
    expected = np.concatenate([image.reshape(-1, 3) for image in train_images]).mean(axis=0)
    assert np.allclose(document["intensity"]["mean"], expected, atol=1e-3)


@pytest.mark.skipif(not (REALDATA / "isbi2012").is_dir(), reason="../shared/realdata/isbi2012 absent")
def test_isbi_fingerprint_is_grey_binary_with_its_sizes(tmp_path):
    cfg = load_config("ingest", ["experiment=isbi"])
    info = prepare_dataset(REALDATA / "isbi2012", tmp_path / "out", cfg.data, on_error="fail", split_seed=0).info
    document = info.extra["fingerprint"]
    assert document["channels"] == "grey" and document["binary_masks"] and document["orientation_free"]
    assert document["size"]["median"] == [512, 512]


@pytest.fixture
def demo_commit(lakefs, lakefs_settings, repo_name, tmp_path, monkeypatch) -> str:
    monkeypatch.setenv(versioning_settings.ENV_ENDPOINT, lakefs_settings.endpoint)
    monkeypatch.setenv(versioning_settings.ENV_ACCESS_KEY_ID, lakefs_settings.access_key_id)
    monkeypatch.setenv(versioning_settings.ENV_SECRET_ACCESS_KEY, lakefs_settings.secret_access_key)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("plan", artifact_location=(tmp_path / "a").as_uri()))
    lakefs.ensure_repository(repo_name, default_branch="main")
    source = generate_demo_dataset(tmp_path / "source", num_images=16, image_size=48, seed=1)
    cfg = load_config("ingest", ["data.val_fraction=0.25", "data.test_fraction=0.0"])
    return str(
        ingest(
            lakefs,
            source,
            cfg.data,
            repo_name,
            cfg.lakefs.data_branch,
            cfg.lakefs.data_prefix,
            on_error=cfg.on_error,
            split_seed=cfg.split_seed,
            work_dir=tmp_path / "work",
        ).uri
    )


@pytest.mark.slow
def test_train_with_experiment_auto_plans_logs_the_plan_and_keeps_the_users_values(demo_commit):
    run_step_cli(
        "train",
        [
            "--data_ref",
            demo_commit,
            "--experiment",
            "auto",
            "--budget_minutes",
            "0.5",
            "--epochs",
            "2",
            "trainer.num_workers=0",
        ],
    )
    run = MlflowClient().search_runs([mlflow.get_experiment_by_name("plan").experiment_id])[0]
    params = run.data.params
    assert params["trainer.epochs"] == "2"  # the command line wins over the plan
    assert params["plan.mode"] == "applied" and params["transforms.image_size"] == "[64, 64]"  # 48 px median
    assert params["data_ref"] == demo_commit  # the plan's data commit is the one trained on
    assert params["model.mean"].startswith("[") and "measured epoch time" in params["plan.rules.trainer.epochs"]
    document = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="plan.md")).read_text()
    assert "| `transforms.image_size` | `[64,64]` | the median image, scaled" in document
    assert "median image 48x48" in document and "ms per train image" in document


@pytest.mark.slow
@pytest.mark.skipif(not (REALDATA / "isbi2012").is_dir(), reason="../shared/realdata/isbi2012 absent")
def test_mlflow_run_main_with_experiment_auto_on_a_real_folder(tmp_path):
    """``mlflow run . -e main -P source=<isbi2012> -P experiment=auto``: ingest finds and fingerprints the data,
    train plans from it (microscopy declared orientation-free), register and infer follow."""
    from test_e2e_chain import EXPERIMENT, Chain

    chain = Chain(tmp_path)
    mlflow.set_tracking_uri(chain.env["MLFLOW_TRACKING_URI"])
    MlflowClient().create_experiment(EXPERIMENT, artifact_location=(tmp_path / "artifacts").as_uri())
    try:
        result = chain.mlflow_run(
            "main",
            source=REALDATA / "isbi2012",
            experiment="auto",
            budget_minutes="0.2",
            threshold="0.0",
            overrides="trainer.num_workers=0",
            **{"ingest.data.orientation_free": "true"},
        )
    finally:
        chain.stop_server()
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    train = client.search_runs([experiment], "tags.`segmodels.step` = 'train'")[0]
    params = train.data.params
    assert params["plan.mode"] == "applied" and params["transforms.image_size"] == "[256, 256]"
    assert params["transforms.train.vflip"] == "0.5" and params["transforms.train.color_jitter"] == "0.0"
    assert params["model.mean"] != "None" and float(params["plan.budget_minutes"]) == 0.2
    plan = Path(mlflow.artifacts.download_artifacts(run_id=train.info.run_id, artifact_path="plan.md")).read_text()
    assert "median image 512x512" in plan and "orientation_free=True" in plan


def test_typical_object_size_is_the_component_a_typical_pixel_lies_in():
    from segmodels.data.fingerprint import pixel_weighted_median

    assert pixel_weighted_median([1.0] * 100 + [50.0]) == 50.0  # a hundred specks of noise beside one object
    assert pixel_weighted_median([10.0, 10.0, 10.0]) == 10.0
    assert pixel_weighted_median([4.0, 3.0]) == 4.0
