"""Cost of the inference modes: time per image of ``predict`` with test-time flips and sliding windows, as ratios
against the plain resize baseline measured in the same run (median of ``--repeats`` runs, modes interleaved so
that all see the same machine load).

    python benchmarks/inference_modes.py [--sizes 256x256 512x512 1024x768 2048x1536] [--repeats 5] [--threads 1]

The model is a small untrained U-Net (resnet18 encoder) trained for ``--model-size`` (256: sliding windows of
256x256); the device is CUDA when there is one, else the CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from segmodels.inference import InferenceOptions, predict
from segmodels.models import ModelSpec, create_model

MODES = {
    "resize": InferenceOptions(mode="resize"),
    "resize+hflip": InferenceOptions(mode="resize", tta="hflip"),
    "resize+flips": InferenceOptions(mode="resize", tta="flips"),
    "sliding(0.5)": InferenceOptions(mode="sliding", overlap=0.5),
    "sliding(0.25)": InferenceOptions(mode="sliding", overlap=0.25),
    "sliding(0.5)+hflip": InferenceOptions(mode="sliding", overlap=0.5, tta="hflip"),
}


def size_of(text: str) -> tuple[int, int]:
    width, height = (int(part) for part in text.lower().split("x"))
    return height, width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["256x256", "512x512", "1024x768", "2048x1536"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = create_model("unet", 21, encoder_name="resnet18", decoder_channels=[64, 32, 16, 16, 16]).eval().to(device)
    spec = ModelSpec.from_model(
        model, num_classes=21, class_names=[str(i) for i in range(21)], image_size=[args.model_size, args.model_size]
    )
    rng = np.random.default_rng(0)
    print(
        f"device {device}, threads {torch.get_num_threads()}, model size {args.model_size}, "
        f"median of {args.repeats} runs, seconds per image (ratio to resize)"
    )
    print(f"{'image (WxH)':>12} " + " ".join(f"{name:>20}" for name in MODES))
    for text in args.sizes:
        height, width = size_of(text)
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        for options in MODES.values():  # warm-up
            predict(model, spec, [image], batch_size=args.batch_size, options=options)
        times: dict[str, list[float]] = {name: [] for name in MODES}
        for _ in range(args.repeats):
            for name, options in MODES.items():
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                predict(model, spec, [image], batch_size=args.batch_size, options=options)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
        medians = {name: statistics.median(values) for name, values in times.items()}
        base = medians["resize"]
        print(f"{text:>12} " + " ".join(f"{f'{medians[n]:.3f} ({medians[n] / base:.1f}x)':>20}" for n in MODES))


if __name__ == "__main__":
    main()
