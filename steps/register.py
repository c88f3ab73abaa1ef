"""MLproject entry point `register`: Register a train run's model behind a metric gate (see segmodels.pipeline.register)."""

from segmodels.pipeline import run_step_cli

if __name__ == "__main__":
    run_step_cli("register")
