"""How a model sees an image at inference: test-time flip averaging and sliding windows at native resolution,
in ``predict``, in evaluation, in validation during training and in the infer step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import test_infer_step as infer_step
import torch
from PIL import Image
from test_infer_step import ingest_demo, last_infer_run, run_infer
from torch import nn

from segmodels.config import ConfigError, load_config
from segmodels.inference import InferenceOptions, InvalidInput, predict
from segmodels.inference.windows import (
    blend_weights,
    sliding_window_logits,
    window_starts,
)
from segmodels.models import ModelSpec
from segmodels.pipeline import StepError
from segmodels.transforms import model_input, with_tta

PROJECT = Path(__file__).resolve().parents[1]
demo_model, tracking = infer_step.demo_model, infer_step.tracking  # the infer step tests' fixtures
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class PixelModel(nn.Module):
    """A per-pixel model (a 1x1 convolution): equivariant to every flip, any input size."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, num_classes, 1)

    def forward(self, x):
        return self.conv(x)


class ConstantModel(nn.Module):
    """Logits [1, 2, 3] at every pixel, whatever the input."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # predict reads the device from the parameters

    def forward(self, x):
        values = torch.tensor([1.0, 2.0, 3.0], device=x.device).view(1, 3, 1, 1)
        return values.expand(x.shape[0], 3, *x.shape[-2:]) + 0 * self.anchor


class LeftRightModel(nn.Module):
    """Class 1 on the left third of its input, class 0 elsewhere: anything but flip-equivariant."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        width = x.shape[-1]
        ramp = torch.linspace(1.0, -2.0, width, device=x.device).view(1, 1, 1, width)
        logit = ramp.expand(x.shape[0], 1, x.shape[-2], width)
        return torch.cat([torch.zeros_like(logit), logit], dim=1) + 0 * self.anchor


def spec_of(num_classes: int, size=(32, 32)) -> ModelSpec:
    return ModelSpec(
        architecture="test",
        num_classes=num_classes,
        class_names=[f"c{i}" for i in range(num_classes)],
        image_size=list(size),
        mean=MEAN,
        std=STD,
    )


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def full_logits(model, image: np.ndarray, window, overlap: float, batch_size: int = 4) -> torch.Tensor:
    """The blended logits of every row, bands joined (each row exactly once)."""
    tensor = torch.from_numpy(image).permute(2, 0, 1)
    bands = [
        (top, band.clone())
        for top, band in sliding_window_logits(model, tensor, MEAN, STD, window, overlap, batch_size)
    ]
    tops = [top for top, _ in bands]
    assert tops == sorted(tops) and all(top + band.shape[1] == nxt for (top, band), nxt in zip(bands, tops[1:]))
    return torch.cat([band for _, band in bands], dim=1)


# -- sliding windows -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "length,window,overlap",
    [(32, 32, 0.5), (100, 32, 0.5), (100, 32, 0.0), (33, 32, 0.25), (4000, 512, 0.75), (10, 32, 0.5)],
)
def test_windows_cover_the_length_evenly_with_at_least_the_overlap(length, window, overlap):
    starts = window_starts(length, window, overlap)
    assert starts[0] == 0 and starts[-1] == max(0, length - window) and starts == sorted(set(starts))
    steps = np.diff(starts)
    assert all(step <= window * (1 - overlap) for step in steps)
    assert all(step >= 1 for step in steps)


def test_a_window_the_size_of_the_image_is_the_plain_forward():
    model, image = PixelModel(), random_image(32, 32)
    logits = full_logits(model, image, (32, 32), 0.5)
    with torch.no_grad():
        plain = model(model_input(torch.from_numpy(image).permute(2, 0, 1)[None], MEAN, STD))[0]
    torch.testing.assert_close(logits, plain)
    sliding = predict(model, spec_of(3), [image], options=InferenceOptions(mode="sliding"))[0]
    resized = predict(model, spec_of(3), [image], options=InferenceOptions(mode="resize"))[0]
    np.testing.assert_array_equal(sliding, resized)


@pytest.mark.parametrize(
    "size,window,overlap",
    [((100, 77), (32, 24), 0.5), ((64, 300), (32, 32), 0.25), ((20, 45), (32, 32), 0.5), ((97, 97), (32, 32), 0.0)],
)
def test_blending_weights_sum_to_one_a_constant_model_stays_that_constant(size, window, overlap):
    logits = full_logits(ConstantModel(), random_image(*size), window, overlap)
    assert logits.shape == (3, *size)
    torch.testing.assert_close(logits, torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1).expand(3, *size))


def test_the_blending_weights_peak_at_the_centre_and_stay_positive():
    weights = blend_weights(32, 24)
    assert weights.shape == (32, 24) and float(weights.min()) > 0
    assert float(weights[15:17, 11:13].min()) == pytest.approx(float(weights.max()))
    assert float(weights[0, 0]) < 0.01


def test_a_per_pixel_model_in_windows_equals_it_on_the_whole_image():
    """A 1x1 convolution sees each pixel the same in every window: blending changes nothing."""
    model, image = PixelModel(), random_image(90, 130, seed=2)
    logits = full_logits(model, image, (32, 48), 0.5, batch_size=3)
    with torch.no_grad():
        whole = model(model_input(torch.from_numpy(image).permute(2, 0, 1)[None], MEAN, STD))[0]
    torch.testing.assert_close(logits, whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["resize", "sliding", "auto"])
@pytest.mark.parametrize("tta", ["false", "hflip", "flips"])
def test_masks_are_always_at_the_input_size(mode, tta):
    shapes = [(32, 32), (20, 45), (100, 77), (17, 300), (65, 65), (200, 50)]
    images = [random_image(*shape, seed=i) for i, shape in enumerate(shapes)]
    masks = predict(PixelModel(), spec_of(3), images, batch_size=2, options=InferenceOptions(tta=tta, mode=mode))
    assert [mask.shape for mask in masks] == shapes
    assert all(mask.dtype == np.uint8 and mask.max() < 3 for mask in masks)


def test_auto_slides_only_over_images_more_than_twice_the_models_size():
    options = InferenceOptions(mode="auto")
    assert not options.slides((64, 64), (32, 32)) and not options.slides((32, 64), (32, 32))
    assert options.slides((65, 20), (32, 32)) and options.slides((10, 65), (32, 32))
    assert InferenceOptions(mode="sliding").slides((8, 8), (32, 32))
    assert not InferenceOptions(mode="resize").slides((4000, 4000), (32, 32))


def test_sliding_sees_detail_that_resizing_loses():
    """A thin line in a large image: at native resolution a per-pixel model finds it, after a 16x downscale the
    line is blurred into its background."""
    image = np.zeros((512, 512, 3), np.uint8)
    image[:, 256] = 255
    model = PixelModel(2)
    with torch.no_grad():
        model.conv.weight.zero_()
        model.conv.weight[1] = 1.0
        model.conv.bias.copy_(torch.tensor([0.0, -1.0]))
    sliding = predict(model, spec_of(2), [image], options=InferenceOptions(mode="auto"))[0]
    resized = predict(model, spec_of(2), [image], options=InferenceOptions(mode="resize"))[0]
    assert sliding[:, 256].all() and not sliding[:, :250].any()
    assert not resized[:, 256].all()


# -- test-time augmentation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["resize", "sliding"])
def test_tta_of_a_flip_equivariant_model_changes_nothing(mode):
    images = [random_image(40, 56, seed=3), random_image(70, 90, seed=4)]
    plain = predict(PixelModel(), spec_of(3), images, options=InferenceOptions(mode=mode))
    for tta in ("hflip", "flips"):
        averaged = predict(PixelModel(), spec_of(3), images, options=InferenceOptions(tta=tta, mode=mode))
        for expected, got in zip(plain, averaged):
            np.testing.assert_array_equal(got, expected)


def test_tta_of_an_asymmetric_model_averages_it_with_its_mirror():
    model = LeftRightModel()
    batch = torch.zeros(1, 3, 8, 30)
    with torch.no_grad():
        averaged = with_tta(model, "hflip")(batch)
        plain = model(batch)
    expected = ((plain.softmax(1) + model(batch).flip(-1).softmax(1)) / 2).log()
    torch.testing.assert_close(averaged, expected)
    image = random_image(32, 30)
    without = predict(model, spec_of(2, (32, 30)), [image])[0]
    with_flips = predict(model, spec_of(2, (32, 30)), [image], options=InferenceOptions(tta="hflip"))[0]
    assert without[:, :5].all() and not without[:, -5:].any()
    assert not np.array_equal(without, with_flips)
    np.testing.assert_array_equal(with_flips, with_flips[:, ::-1])  # the average of an image and its mirror


def test_without_tta_the_model_is_called_as_it_is():
    model = PixelModel()
    assert with_tta(model, False) is model and with_tta(model, "none") is model and with_tta(model, "False") is model


@pytest.mark.parametrize(
    "options,message",
    [
        ({"tta": "vflip"}, "tta='vflip': expected one of false, hflip, flips"),
        ({"mode": "tiles" * 40}, "mode='" + ("tiles" * 40)[:80] + "': expected one of auto, resize, sliding"),
        ({"overlap": 0.9}, "overlap='0.9': expected a number from 0 to 0.75"),
        ({"overlap": float("nan")}, "overlap='nan': expected a number from 0 to 0.75"),
        ({"overlap": True}, "overlap='True': expected a number from 0 to 0.75"),
    ],
)
def test_a_bad_option_is_one_line_naming_it(options, message):
    with pytest.raises(InvalidInput) as refused:
        InferenceOptions(**options)
    assert str(refused.value) == message


# -- configuration -------------------------------------------------------------------------------------------------


def test_infer_and_train_configs_hold_the_options_with_defaults_that_change_nothing():
    infer = load_config("infer", ["inference.tta=hflip", "inference.mode=sliding", "inference.overlap=0.25"])
    assert InferenceOptions.of(infer.inference) == InferenceOptions("hflip", "sliding", 0.25)
    default = InferenceOptions.of(load_config("infer", []).inference)
    assert with_tta(PixelModel(), default.tta).__class__ is PixelModel and default.mode == "auto"
    assert with_tta(PixelModel(), load_config("train", []).trainer.val_tta).__class__ is PixelModel


def test_a_bad_val_tta_is_refused_before_training(tmp_path):
    from segmodels.training import loop

    cfg = load_config("train", ["trainer.val_tta=mirror"])
    with pytest.raises(ConfigError, match=r"^trainer.val_tta='mirror': expected one of false, hflip, flips$"):
        loop.train(cfg, tmp_path / "no-data", tmp_path / "work")
    assert not (tmp_path / "work").exists()


# -- cost ------------------------------------------------------------------------------------------------------------

BIG_IMAGE_SCRIPT = """
import json, resource, sys, time
import numpy as np, torch
from torch import nn
from segmodels.inference import InferenceOptions, predict
from segmodels.models import ModelSpec
torch.set_num_threads(1)
model = nn.Conv2d(3, 21, 1).eval()
spec = ModelSpec(architecture="tiny", num_classes=21, class_names=[str(i) for i in range(21)], image_size=[256, 256],
                 mean=[0.5] * 3, std=[0.25] * 3)
image = np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
predict(model, spec, [image[:256, :256]], options=InferenceOptions(mode="sliding"))  # warm-up
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
[mask] = predict(model, spec, [image], batch_size=8, options=InferenceOptions(mode=sys.argv[1], overlap=0.5))
seconds = time.perf_counter() - start
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
print(json.dumps({"seconds": seconds, "grown": grown, "shape": list(mask.shape)}))
"""


@pytest.mark.slow
def test_a_4000x3000_image_in_sliding_windows_stays_within_bounded_memory_and_time():
    """21 classes at 4000x3000 are 1 GB of float32 logits (the resize path grows by 1.1 GB on this image): sliding
    windows hold about 1.5 window heights of rows (384 x 4000 x 21 x 4 bytes = 129 MB) and a copy of it, a batch
    of windows' logits, the mask. Measured on one thread of a loaded 2-core machine: 13-16 s, +300 MB; allowed
    120 s and 600 MB."""
    result = subprocess.run(
        [sys.executable, "-c", BIG_IMAGE_SCRIPT, "sliding"], cwd=PROJECT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["shape"] == [3000, 4000]
    assert measured["grown"] < 600 << 20, measured
    assert measured["seconds"] < 120, measured


# -- the infer step ------------------------------------------------------------------------------------------------


def test_the_infer_step_predicts_with_tta_and_sliding_windows_as_predict_does(
    demo_model, lakefs, lakefs_settings, repo_name, tracking, tmp_path, monkeypatch
):
    """``-P inference.tta=hflip -P inference.mode=sliding``: 48x48 demo images through a 32x32 model, masks at the
    images' size, the same as ``predict`` with those options, the options recorded on the run."""
    from segmodels.models import load_package
    from segmodels.versioning import LakeFSUri

    uri = LakeFSUri.parse(ingest_demo(lakefs, lakefs_settings, repo_name, tmp_path, monkeypatch, image_size=48))
    out = run_infer(
        demo_model,
        str(uri),
        tmp_path / "predictions",
        split="test",
        **{"inference.tta": "hflip", "inference.mode": "sliding", "inference.overlap": "0.25"},
    )
    images = lakefs.download_prefix(uri.repo, uri.ref, f"{uri.path}/images/test/", tmp_path / "images")
    model, spec = load_package(demo_model / "artifacts" / "package")
    options = InferenceOptions(tta="hflip", mode="sliding", overlap=0.25)
    written = sorted((out / "masks").glob("*.png"))
    assert written
    for mask_path in written:
        [image_path] = list(Path(images).glob(f"{mask_path.stem}.*"))
        image = np.asarray(Image.open(image_path).convert("RGB"))
        [expected] = predict(model, spec, [image], options=options)
        np.testing.assert_array_equal(np.asarray(Image.open(mask_path)), expected)
    params = last_infer_run(tracking).data.params
    assert (params["inference.tta"], params["inference.mode"]) == ("hflip", "sliding")


def test_a_bad_inference_option_stops_the_infer_step_in_one_line_before_anything_runs(tmp_path):
    with pytest.raises(StepError, match=r"^inference\.tta='sideways': expected one of false, hflip, flips$"):
        run_infer(
            tmp_path / "no-model", "lakefs://nowhere/main/data", tmp_path / "out", **{"inference.tta": "sideways"}
        )
    assert not (tmp_path / "out").exists()
