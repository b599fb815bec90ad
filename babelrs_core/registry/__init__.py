"""MLflow model registry: the detector as a pyfunc model, the promotion gate, and the consumers of
``models:/<name>@champion`` (docs/registry.md)."""
