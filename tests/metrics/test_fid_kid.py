import numpy as np
import pytest
import scipy.linalg

from get3d.metrics.fid import (
    fid_from_features,
    fid_from_stats,
    kid_from_features,
    load_features_npz,
    save_features_npz,
)


def _feats(n, d, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d)) / np.sqrt(d)
    return rng.standard_normal((n, d)) @ a + shift


def _fid_scipy(x, y):
    m1, m2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _kid_numpy(real, fake, num_subsets, subset_size, seed):
    n = min(len(real), len(fake))
    m = min(subset_size, n)
    d = real.shape[1]
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(num_subsets):
        x = fake[rng.choice(len(fake), m, replace=False)]
        y = real[rng.choice(len(real), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
        vals.append(mmd)
    return float(np.mean(vals))


def test_fid_self_is_zero():
    x = _feats(500, 64, 0)
    assert abs(fid_from_features(x, x)) < 1e-6


def test_fid_matches_scipy():
    x, y = _feats(600, 64, 1), _feats(700, 64, 2, shift=0.3)
    ours, ref = fid_from_features(x, y), _fid_scipy(x, y)
    assert abs(ours - ref) / ref < 1e-3


def test_fid_from_stats_shape_error():
    with pytest.raises(ValueError, match="mismatched"):
        fid_from_stats(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


@pytest.mark.parametrize("n_real,n_fake,subset", [(300, 400, 1000), (1200, 1500, 1000)])
def test_kid_matches_numpy(n_real, n_fake, subset):
    real, fake = _feats(n_real, 32, 3), _feats(n_fake, 32, 4, shift=0.2)
    ours = kid_from_features(real, fake, num_subsets=10, subset_size=subset, seed=7)
    ref = _kid_numpy(real, fake, 10, subset, 7)
    assert abs(ours - ref) <= 1e-3 * abs(ref)


def test_kid_tiny_sets_nan():
    with pytest.warns(RuntimeWarning):
        assert np.isnan(kid_from_features(np.zeros((1, 4)), np.zeros((5, 4))))


def test_feature_cache_roundtrip(tmp_path):
    f = _feats(50, 8, 5).astype(np.float32)
    key = "a-dataset-key"
    p = tmp_path / "sub" / "real.npz"
    save_features_npz(p, f, key)
    assert np.array_equal(load_features_npz(p, key), f)
    with pytest.warns(RuntimeWarning, match="dataset key"):
        assert load_features_npz(p, "other") is None
    assert load_features_npz(tmp_path / "missing.npz", key) is None
    assert not list((tmp_path / "sub").glob("*.tmp*"))


def test_registry_fid_kid_with_features(tmp_path):
    from get3d.metrics import MetricContext, available_metrics, compute_metrics
    assert {"fid", "kid", "cd", "lfd"} <= set(available_metrics())
    x = _feats(200, 16, 8)
    ctx = MetricContext(kid_subsets=5)
    ctx.cache["real_features"] = x
    ctx.cache["fake_features"] = x
    out = compute_metrics(["fid", "kid"], ctx)
    assert abs(out["fid"]) < 1e-6 and np.isfinite(out["kid"])
