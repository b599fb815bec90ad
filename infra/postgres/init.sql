-- One PostgreSQL server, two databases: MLflow's (POSTGRES_DB, created by the image) and Prefect's.
-- Both use alembic with its own version table, so they must not share a database.
CREATE DATABASE prefect;
