"""How fast a model trains here: seconds per train image, measured once per machine and kept in the segmodels home.

A plan (:mod:`segmodels.planning`) turns a time budget into epochs with this figure. It is measured with a few
real optimiser steps on random input and cached by (model, size, batch, device, threads, torch version) in
``<home>/plan-speed.json``, under a file lock, so that a rerun (and every DDP rank) plans the same epochs.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from segmodels.home import segmodels_home

SPEED_FILE = "plan-speed.json"
WARMUP_STEPS, TIMED_STEPS = 1, 3


def measure_seconds_per_image(model: nn.Module, size: list[int], batch: int, device: torch.device) -> float:
    """Seconds per image of forward, backward and an optimiser step on random input (after a warm-up step)."""
    model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
    images = torch.randn(batch, 3, *size, device=device)
    out = model(images)
    targets = torch.zeros(batch, *out.shape[-2:], dtype=torch.long, device=device)
    elapsed = 0.0
    for step in range(WARMUP_STEPS + TIMED_STEPS):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(images), targets).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= WARMUP_STEPS:
            elapsed += time.perf_counter() - start
    return elapsed / (TIMED_STEPS * batch)


def model_seconds_per_image(model: str, num_classes: int, size: list[int], batch: int, device: torch.device) -> float:
    """:func:`measure_seconds_per_image` of the model config ``conf/model/<model>.yaml`` (no pretrained weights: the
    speed does not depend on them)."""
    from segmodels.config import load_config
    from segmodels.training.builder import instantiate_group

    model_cfg = load_config("train", [f"model={model}", "++model.pretrained=false", "++model.pretrained_path=null"])
    built = instantiate_group("model", model_cfg.model, num_classes=num_classes)
    return measure_seconds_per_image(built, size, batch, device)


def cached_speed(key: str, measure: Callable[[], float], home: Path | None = None) -> float:
    """The seconds per image recorded under ``key``, measured (and recorded) on first use."""
    path = segmodels_home(home) / SPEED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            known = json.loads(path.read_text()) if path.is_file() else {}
        except ValueError:
            known = {}
        if key not in known:
            known[key] = measure()
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps(known, indent=1, sort_keys=True))
            os.replace(temporary, path)
        return float(known[key])


def speed_key(model: str, size: list[int], batch: int, device: torch.device) -> str:
    """The cache key of a measurement: what its figure depends on."""
    return f"{model}|{size[0]}x{size[1]}|b{batch}|{device.type}|t{torch.get_num_threads()}|torch{torch.__version__}"
