# The MLflow tracking server of docker-compose.yml: MLflow at the client's version (the project's mlflow
# 3.17.x) with the Postgres driver (backend store) and boto3 (MinIO artifact store), installed when the image
# is built, so the container starts the server at once and needs no network for packages.
FROM python:3.12.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN pip install mlflow==3.17.2 psycopg2-binary==2.9.10 boto3==1.44.8 \
    && useradd --create-home --uid 1000 mlflow

USER mlflow
WORKDIR /home/mlflow
EXPOSE 5000

# docker-compose.yml gives the stores; this default serves a local sqlite store.
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
