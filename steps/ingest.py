"""MLproject entry point `ingest`: Ingest a data source into lakeFS (see segmodels.pipeline.ingest)."""

from segmodels.pipeline import run_step_cli

if __name__ == "__main__":
    run_step_cli("ingest")
