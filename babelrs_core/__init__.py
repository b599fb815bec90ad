"""babelrs: train, evaluate and ship multi-sensor remote-sensing detectors with BabelRS."""

__version__ = "0.1.0"
