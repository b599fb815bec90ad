"""Data validation: the validate stage's checks of the manifest, its images and raw files.

* :mod:`~babelrs_core.data.validation.stage`: the stage the pipeline calls
  (:func:`~babelrs_core.data.validation.stage.run_validation`) and
  :func:`~babelrs_core.data.validation.stage.validate_frame`, which puts the pieces together;
* :mod:`~babelrs_core.data.validation.report`: the report, its files, ``DataValidationError``;
* :mod:`~babelrs_core.data.validation.rules`: every rule, as a GX expectation and as pandas;
* :mod:`~babelrs_core.data.validation.suites`: the Great Expectations runner and Data Docs;
* :mod:`~babelrs_core.data.validation.images`: the per-image facts the image suite checks;
* :mod:`~babelrs_core.data.validation.raw`: the format check over raw dataset folders.
"""
