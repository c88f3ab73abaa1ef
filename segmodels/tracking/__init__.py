"""MLflow tracking helpers: lineage, training and data set logging."""
