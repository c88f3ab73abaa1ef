"""MLproject entry point `main`: Run the whole chain as child runs of one parent run (see segmodels.pipeline.main)."""

from segmodels.pipeline import run_step_cli

if __name__ == "__main__":
    run_step_cli("main")
