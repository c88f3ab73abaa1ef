"""MLproject entry point `register`: Register a train run's model behind a metric gate (see
segmodels.pipeline.register)."""

import _checkout  # noqa: F401  (first: this checkout's segmodels, not an installed one)

from segmodels.pipeline import run_step_cli  # noqa: E402 (after _checkout)

if __name__ == "__main__":
    run_step_cli("register")
