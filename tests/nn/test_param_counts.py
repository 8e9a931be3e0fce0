"""Parameter counts at the public GET3D configuration (the published architecture), built on the meta device."""
import pytest

from get3d.nn import ModelConfig, build_discriminators, build_generator, count_parameters


def _close(value, target, rel=0.01):
    assert abs(value - target) <= rel * target, f"{value / 1e6:.3f} M vs {target / 1e6:.2f} M"


def test_unified_generator_counts():
    G = build_generator(ModelConfig(generator="unified"), device="meta")
    _close(count_parameters(G), 34.31e6)
    _close(count_parameters(G.backbone.synthesis), 30.0e6)
    _close(count_parameters(G.mapping_tex), 2.10e6)
    _close(count_parameters(G.mapping_geo), 2.10e6)
    # the skip synthesis: 4² .. 256², widths 512×5, 256, 128; two 96-ch heads per block
    assert G.backbone.synthesis.channels == [512, 512, 512, 512, 512, 256, 128]
    assert G.backbone.synthesis.blocks[-1].togeo.out_channels == 96
    assert G.backbone.synthesis.blocks[-1].totex.out_channels == 96


def test_separate_generator_counts():
    G = build_generator(ModelConfig(generator="separate"), device="meta")
    _close(count_parameters(G), 53.47e6)
    assert G.backbone.sdf_net.feature_dim == 70
    assert G.backbone.sdf_net.volume_resolution == 32
    assert G.backbone.synthesis.blocks[0].conv1.affine.in_features == 1024  # concat(w_tex, sg(w_geo))


def test_discriminator_counts():
    D = build_discriminators(ModelConfig(), device="meta")
    _close(count_parameters(D), 60.34e6)
    assert D.rgb.channels == [32, 64, 128, 256, 512, 512, 512, 512, 512]
    assert D.rgb.mapping.embed.in_features == 14


@pytest.mark.parametrize("iso", ["dmtet", "flexicubes"])
def test_builds_every_variant_on_meta(iso):
    for g in ("unified", "separate"):
        G = build_generator(ModelConfig(generator=g, iso_surface=iso), device="meta")
        assert count_parameters(G) > 30e6
