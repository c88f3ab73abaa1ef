"""MLproject entry point `reproduce`: Rerun a train run with its recorded code, config and data (see
segmodels.pipeline.reproduce)."""

import _checkout  # noqa: F401  (first: this checkout's segmodels, not an installed one)

from segmodels.pipeline import run_step_cli  # noqa: E402 (after _checkout)

if __name__ == "__main__":
    run_step_cli("reproduce")
