# The image of docker-compose.yml's services: Python 3.11 with mmp and its dependencies (MLflow, DVC, ...).
# The project itself is mounted at run time; only the package is built in.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true

WORKDIR /opt/mmp
COPY setup.cfg pyproject.toml README.md ./
COPY src ./src
RUN pip install .

EXPOSE 5000 8000
