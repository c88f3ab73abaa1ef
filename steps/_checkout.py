"""Put this checkout's ``segmodels`` first, for the step script importing this module and every process it
starts: ``mlflow run <git url>`` runs a fetched commit from a temporary folder and tags that commit, so that
commit's code must be what runs, not an installed ``segmodels``. Child processes (torchrun workers, the steps main
runs, the embedded lakeFS server) inherit the path through ``PYTHONPATH``."""

import os
import sys

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, PROJECT_ROOT)
os.environ["PYTHONPATH"] = os.pathsep.join(
    [PROJECT_ROOT, *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != PROJECT_ROOT)]
)
