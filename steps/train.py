"""MLproject entry point `train`: Train on a data set pinned to a lakeFS commit (see segmodels.pipeline.train)."""

from segmodels.pipeline import run_step_cli

if __name__ == "__main__":
    run_step_cli("train")
