"""``segmodels ui``: a local, server-rendered browser of data commits (images with their masks), diffs, runs and
model versions, reading lakeFS through the project client and MLflow through its tracking API."""
