"""CSIA + LVSA pretraining: align one shared vision encoder to language (docs/pretraining.md).

Entry point: :func:`babelrs_core.pretrain.train.run_pretraining` (``stages.pretrain``). The
detector stage loads the result with :func:`babelrs_core.models.load_pretrained_encoder`.
"""
