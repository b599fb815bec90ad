"""Land-cover codes of a SOI-mini scene (:attr:`babelrs_core.data.synth.scene.Scene.cover`):
one code per pixel, each sensor's renderer maps it to its own physics (backscatter,
temperature, reflectance)."""

FIELD, SOIL, URBAN, ASPHALT, WATER = range(5)
COVER_NAMES = ("field", "soil", "urban", "asphalt", "water")
