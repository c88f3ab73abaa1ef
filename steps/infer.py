"""MLproject entry point `infer`: Predict masks with a registered model (see segmodels.pipeline.infer)."""

from segmodels.pipeline import run_step_cli

if __name__ == "__main__":
    run_step_cli("infer")
