"""experiment=auto against the hand-written recipes and the plain defaults, on real data, under one time budget.

    python benchmarks/auto.py [--budget MINUTES] [--only camvid,isbi,human_seg] [--threads N]

Each data set is ingested as a user would (its fingerprint lands in dataset.yaml), split into contiguous blocks in
file order so that near-identical neighbours (consecutive CamVid frames, neighbouring ISBI slices) do not straddle
splits, as in ``benchmarks/camvid.py``; every variant trains for the same budget (the plan turns it into epochs
with the measured speed; a recipe or the defaults get the epochs that the same speed measurement fits into it)
and is scored on the held-out test split at full resolution:

- CamVid (101 frames, 70/10/21): auto vs the camvid recipe, both from the local ImageNet MobileNetV2 weights
  (goal: auto within 0.02 test mIoU of the recipe, or better);
- ISBI 2012 (30 slices, 24/3/3, declared orientation-free at ingest): auto vs the isbi recipe, from scratch;
- human_seg (290 photos, 230/30/30, masks resized to their image): auto vs the plain defaults, both with the same
  MobileNetV2 weights (goal: +0.05 test mIoU).
Data sets or weights that are absent are skipped. Prints each plan, its figures and times.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from camvid import CAMVID, REALDATA, WEIGHTS, segnet_layout  # noqa: E402

ISBI = REALDATA / "isbi2012" / "data" / "membrane" / "train"
HUMAN = REALDATA / "human_seg"
PRETRAINED = ["model=unet_mobilenetv2_local", f"model.pretrained_path={WEIGHTS}"]


def block_layout(images: list[Path], masks: list[Path], counts: tuple[int, int, int], target: Path) -> Path:
    """``images/<split>/`` + ``masks/<split>/`` holding the pairs in file order, in contiguous blocks."""
    start = 0
    for split, count in zip(("train", "val", "test"), counts):
        for kind, files in (("images", images), ("masks", masks)):
            (target / kind / split).mkdir(parents=True)
            for path in files[start : start + count]:
                shutil.copy(path, target / kind / split / path.name)
        start += count
    return target


def numbered(folder: Path, pattern: str) -> list[Path]:
    return sorted(folder.glob(pattern), key=lambda path: int(path.stem))


def datasets(root: Path, only: set[str]) -> list[tuple[str, Path, list[str], dict[str, list[str]]]]:
    """(name, source folder, ingest overrides, {variant: train overrides}) of each data set present."""
    found = []
    if "camvid" in only and (CAMVID / "val").is_dir() and WEIGHTS.is_file():
        found.append(
            (
                "camvid",
                segnet_layout(root / "camvid"),
                ["experiment=camvid"],
                {
                    "recipe camvid": ["experiment=camvid", f"model.pretrained_path={WEIGHTS}"],
                    "auto": ["experiment=auto", *PRETRAINED],
                },
            )
        )
    if "isbi" in only and ISBI.is_dir():
        source = block_layout(
            numbered(ISBI / "image", "*.png"), numbered(ISBI / "label", "*.png"), (24, 3, 3), root / "isbi"
        )
        found.append(
            ("isbi", source, ["experiment=isbi"], {"recipe isbi": ["experiment=isbi"], "auto": ["experiment=auto"]})
        )
    if "human_seg" in only and HUMAN.is_dir() and WEIGHTS.is_file():
        source = block_layout(
            numbered(HUMAN / "Training_Images", "*.jpg"),
            numbered(HUMAN / "Ground_Truth", "*.png"),
            (230, 30, 30),
            root / "human_seg",
        )
        found.append(
            (
                "human_seg",
                source,
                ["data.resize_masks=true"],
                {"defaults": PRETRAINED, "auto": ["experiment=auto", *PRETRAINED]},
            )
        )
    return found


def epochs_within(cfg, info, budget: float) -> int:
    """The epochs of ``cfg``'s model, size and batch that the budget holds at the measured speed (as the plan)."""
    import torch

    from segmodels.planning import epochs_for_budget
    from segmodels.training.builder import instantiate_group
    from segmodels.training.speed import measure_seconds_per_image

    size = (
        list(cfg.transforms.image_size)
        if not isinstance(cfg.transforms.image_size, int)
        else [cfg.transforms.image_size] * 2
    )
    model = instantiate_group("model", cfg.model, num_classes=info.num_classes)
    seconds = measure_seconds_per_image(model, size, int(cfg.trainer.batch_size), torch.device("cpu"))
    return epochs_for_budget(seconds, info.splits["train"], info.splits["val"], budget)[0]


def run_variant(name: str, overrides: list[str], data_root: Path, work: Path, budget: float) -> dict:
    """Train one variant within ``budget`` minutes; its plan (if any), minutes and full-resolution test scores."""
    import torch

    from segmodels.config import load_config
    from segmodels.data import load_dataset_info
    from segmodels.inference.evaluate import evaluate_split
    from segmodels.models import load_package
    from segmodels.pipeline.plan import default_model, render_plan, starts_from_weights
    from segmodels.planning import PlanContext, make_plan
    from segmodels.training import train
    from segmodels.training.speed import model_seconds_per_image

    info = load_dataset_info(data_root)
    common = ["trainer.progress_bar=false", "trainer.num_workers=1", f"plan.budget_minutes={budget}"]
    cfg = load_config("train", [*overrides, *common])
    if cfg.plan.mode == "auto":

        def speed(model: str, size: list[int], batch: int) -> float:
            return model_seconds_per_image(model, info.num_classes, size, batch, torch.device("cpu"))

        model = next((o.split("=", 1)[1] for o in overrides if o.startswith("model=")), default_model())
        pretrained = starts_from_weights(cfg.model)
        plan = make_plan(
            info.extra["fingerprint"],
            PlanContext(budget, "cpu", model, pretrained),
            speed,
            user_chose_model=any(o.startswith("model=") for o in overrides),
        )
        print(render_plan(plan.rules()), flush=True)
        cfg = load_config("train", [*plan.overrides(), *overrides, *common, "plan.mode=applied"])
    else:
        cfg = load_config("train", [*overrides, *common, f"trainer.epochs={epochs_within(cfg, info, budget)}"])
    start = time.perf_counter()
    result = train(cfg, data_root, work)
    minutes = (time.perf_counter() - start) / 60
    model, spec = load_package(result.package_dir)
    test = evaluate_split(model, spec, data_root, "test")
    print(
        f"  {name}: {len(result.history)} epochs at {list(spec.image_size)} in {minutes:.1f} min, best val mIoU "
        f"{result.best_metrics['val_miou']:.3f}, test mIoU {test['miou']:.3f}",
        flush=True,
    )
    return {"minutes": minutes, "test_miou": test["miou"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=5.0, help="training minutes per variant (default 5)")
    parser.add_argument("--only", default="camvid,isbi,human_seg", help="comma-separated data sets")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = parser.parse_args()
    import torch

    from segmodels.config import load_config
    from segmodels.data import prepare_dataset

    torch.set_num_threads(args.threads)
    results = {}
    with tempfile.TemporaryDirectory(prefix="segmodels-bench-auto-") as sandbox:
        root = Path(sandbox)
        for name, source, ingest_overrides, variants in datasets(root / "sources", set(args.only.split(","))):
            data = load_config("ingest", ingest_overrides).data
            prepared = prepare_dataset(source, root / name, data, on_error="fail", split_seed=0)
            print(
                f"{name}: splits {prepared.info.splits}, {prepared.info.num_classes} classes, "
                f"budget {args.budget:g} min per variant",
                flush=True,
            )
            results[name] = {
                variant: run_variant(variant, overrides, prepared.root, root / f"{name}-{index}", args.budget)
                for index, (variant, overrides) in enumerate(variants.items())
            }
    if not results:
        print("skipped: ../shared/realdata (or its weights) absent")
        return
    print("\ntest mIoU at full resolution (same budget per data set):")
    for name, runs in results.items():
        (base_name, base), (_, auto) = list(runs.items())
        print(
            f"  {name:<10} {base_name:<15} {base['test_miou']:.3f}   auto {auto['test_miou']:.3f}   "
            f"difference {auto['test_miou'] - base['test_miou']:+.3f}"
        )


if __name__ == "__main__":
    main()
