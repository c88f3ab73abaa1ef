"""Throughput of the segmodels engine against a bare PyTorch loop on the same model, data and batch size,
and of ``segmodels.inference.predict`` against a bare forward pass; prints ratios and peak RSS.

    python benchmarks/train_throughput.py [--epochs 5] [--images 240] [hydra overrides...]

Engine and bare epochs alternate in one process (the bare epoch runs from the engine's ``on_epoch_end``), so
both see the same machine load; the first epoch of each (worker start-up, allocator warm-up) is left out.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from segmodels.config import load_config
from segmodels.data import SegmentationDataset, generate_demo_dataset, load_dataset_info, prepare_dataset
from segmodels.inference import predict
from segmodels.models import load_package
from segmodels.training import Callback, seed_everything, train
from segmodels.training.builder import resolve_num_workers
from segmodels.training.loop import start_workers
from segmodels.transforms import build_transforms, model_input


class BareLoop(Callback):
    """A minimal loop: DataLoader(shuffle) -> forward -> CE -> backward -> AdamW step, on its own copy of the
    model. It runs one epoch from the engine's ``on_epoch_end``, so both alternate under the same load."""

    def __init__(self, cfg, data_root: Path):
        seed_everything(int(cfg.seed))
        info = load_dataset_info(data_root)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = instantiate(cfg.model, num_classes=info.num_classes, _convert_="all").to(self.device)
        dataset = SegmentationDataset(
            data_root,
            "train",
            build_transforms(cfg.transforms, True, self.model.mean, self.model.std, info.ignore_index),
        )
        workers = resolve_num_workers(cfg.trainer.num_workers)
        self.loader = DataLoader(
            dataset,
            batch_size=int(cfg.trainer.batch_size),
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self.device.type == "cuda",
        )
        start_workers(self.loader)  # now: forked after the engine's first epoch, the worker made the engine's
        # second epoch pay a copy-on-write page copy for all its training memory
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=float(cfg.optimizer.lr))
        self.criterion = torch.nn.CrossEntropyLoss(ignore_index=info.ignore_index)
        self.rates: list[float] = []

    def run_epoch(self) -> None:
        self.model.train()
        start, seen = time.perf_counter(), 0
        for images, masks in self.loader:
            images, masks = images.to(self.device, non_blocking=True), masks.to(self.device, non_blocking=True)
            loss = self.criterion(self.model(images), masks)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            seen += images.shape[0]
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.rates.append(seen / (time.perf_counter() - start))

    def on_epoch_end(self, state, metrics) -> None:
        self.run_epoch()


def inference_rates(
    package_dir: Path, data_root: Path, batch_size: int, repeats: int
) -> tuple[float, float, list[float]]:
    """(predict images/s, bare forward+argmax images/s, per-repeat predict/bare ratios) over the validation
    images; the rates are each one's best repeat, the ratios pair each predict pass with the bare pass beside it.
    The bare pass gets the images already normalised, letterboxed to the model's input size and on the device, so
    both run the same model work and the ratio is what ``predict`` adds (input preparation, copies, resizing the
    logits back to each image's size)."""
    model, spec = load_package(package_dir)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    raw = SegmentationDataset(data_root, "val")
    images = [raw[i][0].permute(1, 2, 0).numpy() for i in range(len(raw))]
    tensors = [model_input(raw[i][0][None], spec.mean, spec.std, spec.image_size) for i in range(len(raw))]
    batches = [torch.cat(tensors[i : i + batch_size]).to(device) for i in range(0, len(tensors), batch_size)]

    def bare() -> None:
        with torch.inference_mode():
            for batch in batches:
                model(batch).argmax(1).cpu()

    def segmodels_predict() -> None:
        predict(model, spec, images, batch_size=batch_size)

    timings = {bare: [], segmodels_predict: []}
    bare()
    segmodels_predict()  # warm-up
    for _ in range(repeats):  # interleaved so load changes hit both alike
        for fn in (bare, segmodels_predict):
            start = time.perf_counter()
            fn()
            timings[fn].append(time.perf_counter() - start)
    ratios = [b / p for b, p in zip(timings[bare], timings[segmodels_predict])]
    return len(images) / min(timings[segmodels_predict]), len(images) / min(timings[bare]), ratios


def peak_rss_mib() -> tuple[float, float]:
    scale = 1024 if sys.platform != "darwin" else 1024 * 1024
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / scale / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / scale / 1024
    return own, children


def demo_data(tmp: Path, num_images: int) -> Path:
    """The demo data set with ``num_images`` images, prepared with the ingest step's default options."""
    ingest = load_config("ingest")
    source = generate_demo_dataset(tmp / "source", num_images=num_images)
    return prepare_dataset(
        source, tmp / "data", ingest.data, on_error=ingest.on_error, split_seed=ingest.split_seed
    ).root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs for each of engine and bare loop")
    parser.add_argument("--images", type=int, default=240, help="demo images to generate")
    parser.add_argument("--data", type=Path, default=None, help="a prepared data set instead of the demo")
    parser.add_argument("--repeats", type=int, default=21, help="inference timing repeats (each ~0.1 s on 2 cores)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_root = args.data or demo_data(tmp, args.images)
        overrides = [f"trainer.epochs={args.epochs}", "trainer.progress_bar=false", *args.overrides]
        cfg = load_config("train", overrides)
        bare = BareLoop(cfg, data_root)
        result = train(cfg, data_root, tmp / "work", callbacks=[bare])  # engine and bare epochs alternate
        engine_rates = [h["train_images_per_s"] for h in result.history]
        bare_rates = bare.rates
        # steady state: the first epoch (worker start-up, allocator warm-up) is left out of both
        bare_rate = statistics.median(bare_rates[1:] or bare_rates)
        engine_rate = statistics.median(engine_rates[1:] or engine_rates)
        # each engine epoch against the bare epoch run right after it: robust to one slow epoch of either
        epoch_ratios = [e / b for e, b in zip(engine_rates, bare_rates)][1:] or [engine_rates[0] / bare_rates[0]]
        predict_rate, forward_rate, infer_ratios = inference_rates(
            result.package_dir, data_root, int(cfg.trainer.batch_size), args.repeats
        )
    own, children = peak_rss_mib()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(
        f"device: {device}; model {cfg.model.name}/{cfg.model.get('encoder_name')}, batch {cfg.trainer.batch_size}, "
        f"image {cfg.transforms.image_size}, {len(engine_rates)} epochs"
    )
    print(f"train  segmodels engine : {engine_rate:8.1f} images/s  (per epoch {[round(r, 1) for r in engine_rates]})")
    print(f"train  bare PyTorch loop: {bare_rate:8.1f} images/s  (per epoch {[round(r, 1) for r in bare_rates]})")
    print(f"train  ratio engine/bare: {engine_rate / bare_rate:8.3f}  (goal >= 0.95)")
    print(
        f"train  median of per-epoch ratios: {statistics.median(epoch_ratios):.3f}  "
        f"(per epoch {[round(r, 3) for r in epoch_ratios]})"
    )
    print(f"infer  segmodels predict: {predict_rate:8.1f} images/s")
    print(f"infer  bare forward     : {forward_rate:8.1f} images/s")
    print(f"infer  ratio predict/bare: {predict_rate / forward_rate:7.3f}  (goal >= 0.95)")
    print(f"infer  median of per-repeat ratios: {statistics.median(infer_ratios):.3f}  ({len(infer_ratios)} repeats)")
    print(f"peak RSS: {own:.0f} MiB (this process), {children:.0f} MiB (largest child: DataLoader workers)")


if __name__ == "__main__":
    main()
