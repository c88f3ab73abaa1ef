"""Training checkpoints: everything needed for a killed run to resume and end as an uninterrupted one, and
where a run's files live in its work directory."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

CHECKPOINT_FILE = Path("checkpoints") / "last.pt"  # rewritten every epoch; a rerun resumes from it
BEST_DIR = "best"  # model package of the best epoch
FINAL_DIR = "final"  # model package of the last epoch


def rng_state() -> dict:
    """Random states of Python, NumPy, torch CPU and CUDA, as types ``torch.load(weights_only=True)`` reads (NumPy's
    key array as a tensor)."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict) -> None:
    """Set the random states saved by :func:`rng_state`."""
    random.setstate(state["python"])
    name, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict, path: Path) -> None:
    """Write ``state`` to ``path`` atomically (a kill mid-write leaves the previous checkpoint)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    """The state saved at ``path``, read with ``weights_only=True`` (tensors and plain values: a file planted in the
    work folder runs no code); an unreadable file raises RuntimeError naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file named
        raise RuntimeError(f"{path}: cannot read training checkpoint ({err.__class__.__name__}: {err})") from err
