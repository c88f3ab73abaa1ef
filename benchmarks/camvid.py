"""CamVid benchmark: the ``camvid`` recipe fine-tuned from the local ImageNet MobileNetV2 weights against the same
recipe and budget from scratch, each scored on a held-out test split at the frames' full 480x360 resolution.

    python benchmarks/camvid.py [--epochs N] [--threads N]

Data: the 101 CamVid frames of ``../shared/realdata/camvid`` (one drive, consecutive frames two apart), laid out
as SegNet publishes CamVid (``train/ val/ test/`` with ``*annot/``) in time order, so that near-identical
neighbouring frames do not straddle splits: the first 70 frames train, the next 10 validate (best epoch), the
last 21 are the held-out test split. Goals (issue 15): pretrained test mIoU >= 0.45 and >= 0.10 above scratch,
with at most 20 minutes of training on 2 CPU cores. Skips (exit 0) when the data or the weights are absent.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
REALDATA = PROJECT.parent / "shared" / "realdata"
CAMVID = REALDATA / "camvid"
WEIGHTS = REALDATA / "weights" / "mobilenet_v2-b0353104.pth"
SPLITS = (("train", 70), ("val", 10), ("test", 21))


def segnet_layout(target: Path) -> Path:
    """The realdata frames in time order as ``<split>/`` + ``<split>annot/`` folders below ``target``."""
    frames = sorted((CAMVID / "val").glob("*.png"))
    assert len(frames) == sum(count for _, count in SPLITS), f"{CAMVID}: expected 101 frames, found {len(frames)}"
    start = 0
    for split, count in SPLITS:
        for kind, source in ((split, "val"), (f"{split}annot", "valannot")):
            (target / kind).mkdir(parents=True)
            for frame in frames[start : start + count]:
                shutil.copy(CAMVID / source / frame.name, target / kind / frame.name)
        start += count
    shutil.copy(CAMVID / "class_names.txt", target / "class_names.txt")
    return target


def run_variant(name: str, overrides: list[str], data_root: Path, work: Path) -> dict:
    """Train the recipe with ``overrides``; its training minutes, best val mIoU and full-resolution test scores."""
    from segmodels.config import load_config
    from segmodels.inference.evaluate import evaluate_split
    from segmodels.models import load_package
    from segmodels.training import train

    cfg = load_config("train", ["experiment=camvid", "trainer.progress_bar=false", *overrides])
    start = time.perf_counter()
    result = train(cfg, data_root, work)
    minutes = (time.perf_counter() - start) / 60
    model, spec = load_package(result.package_dir)
    test = evaluate_split(model, spec, data_root, "test")
    print(
        f"  {name}: {len(result.history)} epochs in {minutes:.1f} min, best val mIoU "
        f"{result.best_metrics['val_miou']:.3f} (epoch {result.best_epoch + 1}), test mIoU {test['miou']:.3f}",
        flush=True,
    )
    return {
        "minutes": minutes,
        "val_miou": result.best_metrics["val_miou"],
        "test": test,
        "class_names": spec.class_names,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, help="train epochs (default: the camvid recipe's)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2: the goal's machine)")
    args = parser.parse_args()
    if not (CAMVID / "val").is_dir() or not WEIGHTS.is_file():
        print(f"skipped: {CAMVID} or {WEIGHTS} absent")
        return
    import torch

    from segmodels.config import load_config
    from segmodels.data import prepare_dataset

    torch.set_num_threads(args.threads)
    common = ["trainer.num_workers=1", *([f"trainer.epochs={args.epochs}"] if args.epochs else [])]
    with tempfile.TemporaryDirectory(prefix="segmodels-bench-camvid-") as sandbox:
        root = Path(sandbox)
        data = load_config("ingest", ["experiment=camvid"]).data
        prepared = prepare_dataset(segnet_layout(root / "source"), root / "data", data, on_error="fail", split_seed=0)
        print(
            f"CamVid: splits {prepared.info.splits}, {prepared.info.num_classes} classes "
            f"(Unlabelled ignored); test scored at 480x360",
            flush=True,
        )
        pretrained = run_variant(
            "pretrained", [*common, f"model.pretrained_path={WEIGHTS}"], prepared.root, root / "pretrained"
        )
        scratch = run_variant("scratch", [*common, "trainer.encoder_lr_scale=1.0"], prepared.root, root / "scratch")
    names = pretrained["class_names"]
    print("per-class test IoU   pretrained  scratch")
    for index, name in enumerate(names):
        print(
            f"  {name:<18} {pretrained['test']['iou_per_class'][index]:10.3f} "
            f"{scratch['test']['iou_per_class'][index]:8.3f}"
        )
    gain = pretrained["test"]["miou"] - scratch["test"]["miou"]
    print(
        f"test mIoU at full resolution: pretrained {pretrained['test']['miou']:.3f} (goal >= 0.45), "
        f"scratch {scratch['test']['miou']:.3f}, gain {gain:+.3f} (goal >= 0.10)"
    )
    print(f"pretrained training: {pretrained['minutes']:.1f} min (goal <= 20 on 2 cores)")
    ok = pretrained["test"]["miou"] >= 0.45 and gain >= 0.10 and pretrained["minutes"] <= 20
    print("goals met" if ok else "goals NOT met")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
