"""The pipeline: stage specs (:mod:`.specs`), the one stage runner (:mod:`.runner`), the torchrun
worker (:mod:`.worker`), ``dvc.yaml`` generation (:mod:`.dvc`) and the pipeline runners
(:mod:`.runners`: in-process, or a plugin such as the Prefect flow)."""

from babelrs_core.pipeline.specs import (
    PIPELINE,
    STAGES,
    Curve,
    StageSpec,
    cache_key,
    params_subset,
    stage,
)

__all__ = ["PIPELINE", "STAGES", "Curve", "StageSpec", "cache_key", "params_subset", "stage"]
