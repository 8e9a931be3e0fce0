"""FID and KID on Inception pool3 features, with an on-disk cache of the real-set features.

- FID = |mu_r - mu_f|^2 + tr(S_r) + tr(S_f) - 2 tr((S_r S_f)^{1/2}), in float64.  The trace of the matrix
  square root is computed as sum(sqrt(eig(A^{1/2} B A^{1/2}))) with A^{1/2} from a symmetric eigen-
  decomposition (A^{1/2} B A^{1/2} is symmetric PSD and similar to A B, so no complex sqrtm is needed).
- KID = unbiased MMD^2 with the cubic polynomial kernel k(x,y) = (x.y/d + 1)^3, averaged over
  ``num_subsets`` random subsets.  Subset-size rule (as StyleGAN's metric code): ``m = min(subset_size,
  n_real, n_fake)``; each subset draws m indices without replacement from each set, with
  ``numpy.random.default_rng(seed)``: first the fake indices, then the real indices, per subset.
  With fewer than 2 samples in either set KID is NaN (with a warning).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from get3d.io import atomic_write_npz


def feature_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"feature_stats needs [N>=2, D] features, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def fid_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError(f"FID: mismatched stats shapes {mu1.shape}/{mu2.shape}, {s1.shape}/{s2.shape}")
    r1 = _sqrt_psd(s1)
    m = r1 @ s2 @ r1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean, 0.0))


def fid_from_features(real, fake) -> float:
    return fid_from_stats(*feature_stats(real), *feature_stats(fake))


def kid_from_features(real, fake, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0,
                      device: str | torch.device = "cpu") -> float:
    real = np.asarray(real, np.float64)
    fake = np.asarray(fake, np.float64)
    n = min(real.shape[0], fake.shape[0])
    if n < 2:
        warnings.warn(f"KID undefined with {real.shape[0]} real / {fake.shape[0]} fake samples; returning NaN",
                      RuntimeWarning, stacklevel=2)
        return float("nan")
    m = min(subset_size, n)
    d = real.shape[1]
    rng = np.random.default_rng(seed)
    r_t = torch.as_tensor(real, device=device)
    f_t = torch.as_tensor(fake, device=device)
    total = 0.0
    for _ in range(num_subsets):
        fi = torch.as_tensor(rng.choice(fake.shape[0], m, replace=False), device=device)
        ri = torch.as_tensor(rng.choice(real.shape[0], m, replace=False), device=device)
        x, y = f_t[fi], r_t[ri]
        a = (x @ x.T / d + 1) ** 3 + (y @ y.T / d + 1) ** 3
        b = (x @ y.T / d + 1) ** 3
        total += ((a.sum() - torch.diagonal(a).sum()) / (m - 1) - b.sum() * 2 / m).item()
    return total / num_subsets / m


# ----------------------------------------------------------------------------------------------- cache

def save_features_npz(path: str | os.PathLike, feats: np.ndarray, key: str) -> None:
    """Atomically write ``{features, mu, sigma, key}``."""
    feats = np.asarray(feats, np.float32)
    mu, sigma = feature_stats(feats) if len(feats) >= 2 else (feats.mean(0), np.zeros((feats.shape[1],) * 2))
    atomic_write_npz(path, features=feats, mu=mu, sigma=sigma, key=np.array(key))


def load_features_npz(path: str | os.PathLike, key: str | None) -> np.ndarray | None:
    """Features from a cache file, or ``None`` if it is missing or was made for another ``key``."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if key is not None and str(z["key"]) != key:
                warnings.warn(f"feature cache {path} is for dataset key {str(z['key'])!r}, not {key!r}; recomputing",
                              RuntimeWarning, stacklevel=2)
                return None
            return np.array(z["features"])
    except (OSError, KeyError, ValueError) as exc:
        warnings.warn(f"feature cache {path} unreadable ({exc}); recomputing", RuntimeWarning, stacklevel=2)
        return None
