"""Training engine: ``train(cfg, data_root, work_dir, callbacks) -> TrainResult``."""
from .engine import TrainResult, Trainer, seed_everything, train

__all__ = ["TrainResult", "Trainer", "seed_everything", "train"]
