"""Image quality metrics the paper reports (l1, PSNR, SSIM) on uint8 RGB images.

PSNR and SSIM come from scikit-image, so numbers match what other projects compute; it is
imported inside the functions because only evaluation needs it (the app must not).
"""

from __future__ import annotations

import math

import numpy as np


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError(f"metrics expect uint8 images, got {a.dtype} and {b.dtype}")
    if a.ndim not in (2, 3) or a.size == 0:
        raise ValueError(f"expected (H, W, 3) or (H, W) images, got shape {a.shape}")
    return a, b


def l1(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute error on the [0, 1] scale (the paper prints this x100, as %)."""
    a, b = _pair(a, b)
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() / 255.0)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for 8-bit data; inf for identical images."""
    a, b = _pair(a, b)
    if np.array_equal(a, b):
        return math.inf  # skimage would divide by zero (with a warning) to the same answer
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(a, b, data_range=255))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity (7x7 uniform window, per channel, averaged) for 8-bit data.

    Images smaller than the 7-pixel window use the largest odd window that fits.
    """
    a, b = _pair(a, b)
    from skimage.metrics import structural_similarity

    side = min(a.shape[0], a.shape[1])
    if side < 3:
        raise ValueError(f"SSIM needs images of at least 3 x 3 pixels, got {a.shape}")
    win = min(7, side if side % 2 else side - 1)
    return float(
        structural_similarity(
            a, b, data_range=255, win_size=win, channel_axis=-1 if a.ndim == 3 else None
        )
    )
