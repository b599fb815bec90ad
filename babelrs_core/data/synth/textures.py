"""Procedural textures for SOI-mini: spectral fBm, correlated gamma texture, crop rows.

Everything is vectorised numpy (one FFT per field) and driven by an explicit
:class:`numpy.random.Generator`, so a seed gives the same texture on every machine.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import special

#: Fields are synthesised on a canvas this much larger than asked and cropped, so that the
#: periodic FFT synthesis does not make the left edge continue the right one.
_PAD_FACTOR = 1.25
_LUT_SIGMAS = 7.0  # gamma_texture tabulates the Gaussian -> gamma map over +-7 sigma ...
_LUT_SIZE = 4097  # ... at this many points


@functools.lru_cache(maxsize=64)
def _spectrum(
    ph: int, pw: int, beta: float, min_wavelength_px: float, max_wavelength_px: float | None
) -> np.ndarray:
    """Amplitude filter of :func:`fbm` (cached: the same few shapes recur for every image)."""
    fy = np.fft.fftfreq(ph)[:, None]
    fx = np.fft.rfftfreq(pw)[None, :]
    f = np.hypot(fx, fy)
    f[0, 0] = 1.0
    amp = f ** (-beta / 2.0) * np.exp(-((f * min_wavelength_px) ** 2))
    if max_wavelength_px is not None:
        amp *= 1.0 - np.exp(-((f * max_wavelength_px) ** 2))
    amp[0, 0] = 0.0
    amp.flags.writeable = False
    return amp


def fbm(
    rng: np.random.Generator,
    shape: tuple[int, int],
    beta: float = 3.0,
    min_wavelength_px: float = 2.0,
    max_wavelength_px: float | None = None,
) -> np.ndarray:
    """Fractional Brownian motion field, zero mean and unit standard deviation.

    Spectral synthesis: white noise filtered by ``|f|^(-beta/2)`` (power spectrum ``|f|^-beta``),
    with a Gaussian taper that removes wavelengths much shorter than ``min_wavelength_px`` and,
    if given, a high-pass that removes wavelengths longer than ``max_wavelength_px``. Larger
    ``beta`` gives smoother fields (2: rough terrain, 3-4: gentle undulation).
    """
    h, w = shape
    ph, pw = int(np.ceil(h * _PAD_FACTOR)), int(np.ceil(w * _PAD_FACTOR))
    amp = _spectrum(ph, pw, beta, min_wavelength_px, max_wavelength_px)
    white = rng.standard_normal((ph, pw))
    field = np.fft.irfft2(np.fft.rfft2(white) * amp, s=(ph, pw))[:h, :w]
    field = field - field.mean()
    std = field.std()
    return field / std if std > 0 else field


def gamma_texture(
    rng: np.random.Generator, shape: tuple[int, int], nu: float, corr_px: float
) -> np.ndarray:
    """Spatially correlated texture ``tau ~ Gamma(nu, 1/nu)`` (mean 1, variance ``1/nu``).

    A smooth Gaussian field (correlation length about ``corr_px``) is mapped to uniform through
    the normal CDF and then to the gamma distribution through its inverse CDF, so the marginal is
    exactly gamma. Multiplied with speckle this gives K-distributed clutter (docs/soi_mini.md §6.1).
    """
    g = fbm(rng, shape, beta=2.0, min_wavelength_px=corr_px)
    # The map g -> gamma quantile is smooth and monotone: tabulate it finely and interpolate
    # (the inverse incomplete gamma function is slow per pixel).
    grid = np.linspace(-_LUT_SIGMAS, _LUT_SIGMAS, _LUT_SIZE)
    u = np.clip(special.ndtr(grid), 1e-12, 1.0 - 1e-12)
    return np.interp(g, grid, special.gammaincinv(nu, u) / nu)


def stripes(
    shape: tuple[int, int], angle_rad: float, period_px: float, phase: float = 0.0
) -> np.ndarray:
    """A sinusoidal stripe pattern in [-1, 1] (crop rows, lane ripples) at ``angle_rad``."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    d = xx * np.cos(angle_rad) + yy * np.sin(angle_rad)
    return np.sin(2.0 * np.pi * d / period_px + phase)


def blocks(rng: np.random.Generator, shape: tuple[int, int], block_px: float) -> np.ndarray:
    """Piecewise-constant random blocks in [0, 1) (roofs of an urban area seen from above)."""
    h, w = shape
    ny, nx = int(np.ceil(h / block_px)) + 1, int(np.ceil(w / block_px)) + 1
    values = rng.random((ny, nx))
    iy = (np.arange(h) / block_px).astype(int)
    ix = (np.arange(w) / block_px).astype(int)
    return values[iy[:, None], ix[None, :]]
