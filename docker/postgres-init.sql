-- Run once by the postgres image on an empty volume (docker-compose.yml, profile team): a database for the
-- MLflow server's users, beside the `mlflow` database of its runs.
CREATE DATABASE mlflow_auth;
