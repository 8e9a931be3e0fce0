"""The export FID's low-rank formula equals the standard FID (get3d.metrics.fid)."""
from __future__ import annotations

import numpy as np
import pytest

from get3d.export.fid import fid
from get3d.metrics.fid import fid_from_features


@pytest.mark.parametrize("n_real,n_fake", [(5, 7), (12, 3), (40, 40)])
def test_low_rank_fid_equals_the_standard_one(n_real, n_fake):
    rng = np.random.default_rng(n_real)
    real = rng.normal(size=(n_real, 64))
    fake = rng.normal(0.3, 1.5, size=(n_fake, 64)) @ rng.normal(size=(64, 64)) * 0.2
    assert fid(real, fake) == pytest.approx(fid_from_features(real, fake), rel=1e-6, abs=1e-6)
