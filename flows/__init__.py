"""Prefect flows: thin wrappers over :mod:`babelrs_core.stages` (no stage logic lives here)."""
