"""Model knobs (section ``model`` of params.yaml) and the network builders.

Defaults are the public GET3D paper configuration (1024² images, 256² tri-planes, tet grid 90, unified
generator, DMTet).  Small CPU smoke profiles override sizes only.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from get3d.schema import ConfigError, spec


@dataclass(frozen=True)
class ModelConfig:
    # generator family
    generator: str = spec("unified", choices=("unified", "separate"),
                          help="unified: one tri-plane backbone (public 'improved' G); separate: 3-D conv geometry "
                               "nets + texture tri-plane (paper's main model)")
    iso_surface: str = spec("dmtet", choices=("dmtet", "flexicubes"), help="surface extraction")
    # mapping
    z_dim: int = spec(512, min=1, max=4096, help="latent size of each code (texture, geometry)")
    w_dim: int = spec(512, min=1, max=4096, help="intermediate latent size")
    mapping_layers: int = spec(8, min=1, max=16, help="FC layers per mapping network")
    mapping_lr_multiplier: float = spec(0.01, min=1e-6, max=1.0, help="equalized-lr multiplier of the mapping nets")
    w_avg_beta: float = spec(0.998, min=0.0, max=1.0, help="decay of the tracked w average (truncation centre)")
    style_mixing_prob: float = spec(0.9, min=0.0, max=1.0, help="style-mixing probability per code in training")
    # images
    img_resolution: int = spec(1024, min=8, max=4096, help="rendered / discriminated image size (power of two)")
    # tri-plane backbone
    triplane_resolution: int = spec(256, min=4, max=1024, help="tri-plane size (power of two)")
    triplane_channels: list[int] | None = spec(
        None, min=1, help="explicit trunk widths per block 4²..R² (None: from channel_base / channel_max)")
    channel_base: int = spec(32768, min=1, help="trunk width = min(channel_base / res, channel_max)")
    channel_max: int = spec(512, min=1, help="largest trunk width")
    plane_channels: int = spec(32, min=1, max=512, help="channels per plane (head width = 3 x this, per head)")
    decoder_hidden: int = spec(32, min=1, max=1024, help="hidden width of the tri-plane point decoders")
    texture_features: int = spec(16, min=1, max=256, help="texture feature width before to_rgb")
    conv_clamp: float | None = spec(256.0, min=0.0, help="clamp of synthesis conv outputs (None: off)")
    use_noise: bool = spec(True, help="per-layer noise in the synthesis trunk")
    # separate geometry nets
    geo_channels: list[int] = spec(default_factory=lambda: [256, 256, 128, 64], min=1,
                                   help="widths of the 3-D geometry nets at 4³, 8³, 16³, 32³, ...")
    geo_mlp_width: int = spec(256, min=1, max=4096, help="width of the geometry point MLPs (separate G)")
    sdf_hidden_layers: int = spec(3, min=1, max=16, help="hidden layers of the SDF MLP (separate G)")
    deformation_hidden_layers: int = spec(2, min=1, max=16, help="hidden layers of the deformation MLP (separate G)")
    # geometry
    tet_res: int = spec(90, min=2, max=512, help="tetrahedral / cube grid resolution")
    dmtet_scale: float = spec(1.0, min=1e-3, max=100.0, help="grid box is [-0.5, 0.5]³ x this")
    deformation_multiplier: float | None = spec(
        None, min=1e-3, max=1e3, help="Δv = tanh(x) / (tet_res x this); None: 1 for DMTet, 2 for FlexiCubes")
    # discriminators
    d_channels: list[int] | None = spec(None, min=1, help="explicit D widths from img_resolution down to 4²")
    d_channel_base: int = spec(32768, min=1, help="D width = min(d_channel_base / res, d_channel_max)")
    d_channel_max: int = spec(512, min=1, help="largest D width")
    mbstd_group_size: int = spec(4, min=0, max=64, help="minibatch-std group size (0: whole batch)")
    mbstd_num_channels: int = spec(1, min=0, max=16, help="minibatch-std feature channels (0: off)")
    cmap_dim: int | None = spec(None, min=1, help="camera-projection width (None: D width at 4², i.e. 512)")
    d_mapping_layers: int = spec(8, min=1, max=16, help="layers of each D's camera mapping net")
    camera_conditioning: bool = spec(True, help="condition both D on the (azimuth, polar) camera pose")
    num_fp16_res: int = spec(4, min=0, max=16, help="D blocks (highest resolutions) run in reduced precision "
                                                     "on CUDA")
    fp16_dtype: str = spec("float16", choices=("float16", "bfloat16"), help="reduced-precision dtype for D")
    d_conv_clamp: float | None = spec(256.0, min=0.0, help="clamp of D conv outputs (None: off)")
    channels_last: bool = spec(True, help="NHWC weights/activations in the reduced-precision D blocks and "
                                          "synthesis convs")
    raster_backend: str = spec("auto", choices=("auto", "torch", "nvdiffrast"), help="rasterizer")

    def validate(self, prefix: str = "model") -> None:
        def pow2(name, v):
            if v & (v - 1):
                raise ConfigError(f"{prefix}.{name}: {v!r} must be a power of two")
        pow2("img_resolution", self.img_resolution)
        pow2("triplane_resolution", self.triplane_resolution)
        nblocks = self.triplane_resolution.bit_length() - 2
        if self.triplane_channels is not None and len(self.triplane_channels) != nblocks:
            raise ConfigError(f"{prefix}.triplane_channels: {self.triplane_channels!r} needs {nblocks} entries "
                              f"(blocks 4² .. {self.triplane_resolution}²)")
        nd = self.img_resolution.bit_length() - 2
        if self.d_channels is not None and len(self.d_channels) != nd:
            raise ConfigError(f"{prefix}.d_channels: {self.d_channels!r} needs {nd} entries "
                              f"({self.img_resolution}² .. 4²)")

    @property
    def resolved_deformation_multiplier(self) -> float:
        if self.deformation_multiplier is not None:
            return self.deformation_multiplier
        return 2.0 if self.iso_surface == "flexicubes" else 1.0

    def with_overrides(self, **kw) -> "ModelConfig":
        names = {f.name for f in fields(self)}
        bad = sorted(set(kw) - names)
        if bad:
            raise ConfigError(f"model.{bad[0]}: unknown key; allowed keys are {sorted(names)}")
        cfg = replace(self, **kw)
        cfg.validate()
        return cfg


#: A tiny configuration for CPU smoke tests (same architecture, small sizes).
def small_config(**kw) -> ModelConfig:
    base = dict(z_dim=32, w_dim=32, mapping_layers=2, img_resolution=32, triplane_resolution=16,
                triplane_channels=[32, 32, 16], plane_channels=8, decoder_hidden=16, texture_features=8,
                geo_channels=[16, 16, 8], geo_mlp_width=16, tet_res=8, d_channels=[16, 16, 32, 32],
                d_mapping_layers=2, num_fp16_res=0, channels_last=False, raster_backend="torch")
    base.update(kw)
    return ModelConfig().with_overrides(**base)


def build_backbone(cfg: ModelConfig, device=None):
    from get3d.nn.generator import SeparateGenerator, UnifiedGenerator
    common = dict(w_dim=cfg.w_dim, triplane_resolution=cfg.triplane_resolution, channels=cfg.triplane_channels,
                  channel_base=cfg.channel_base, channel_max=cfg.channel_max, plane_channels=cfg.plane_channels,
                  decoder_hidden=cfg.decoder_hidden, texture_features=cfg.texture_features, scale=cfg.dmtet_scale,
                  conv_clamp=cfg.conv_clamp, use_noise=cfg.use_noise, channels_last=False,
                  flexicubes=cfg.iso_surface == "flexicubes", device=device)
    if cfg.generator == "unified":
        return UnifiedGenerator(**common)
    return SeparateGenerator(geo_channels=cfg.geo_channels, geo_mlp_width=cfg.geo_mlp_width,
                             sdf_hidden=cfg.sdf_hidden_layers, deformation_hidden=cfg.deformation_hidden_layers,
                             **common)


def build_generator(cfg: ModelConfig, device=None):
    """The full :class:`~get3d.nn.generator.GET3DGenerator` (``device='meta'`` builds it without memory)."""
    from get3d.nn.generator import GET3DGenerator
    return GET3DGenerator(build_backbone(cfg, device), z_dim=cfg.z_dim, w_dim=cfg.w_dim,
                          mapping_layers=cfg.mapping_layers, mapping_lr_multiplier=cfg.mapping_lr_multiplier,
                          w_avg_beta=cfg.w_avg_beta, img_resolution=cfg.img_resolution, tet_res=cfg.tet_res,
                          dmtet_scale=cfg.dmtet_scale, deformation_multiplier=cfg.resolved_deformation_multiplier,
                          iso_surface=cfg.iso_surface, style_mixing_prob=cfg.style_mixing_prob,
                          raster_backend=cfg.raster_backend, device=device)


def build_discriminators(cfg: ModelConfig, device=None):
    """The RGB + mask :class:`~get3d.nn.discriminator.DualDiscriminator`."""
    from get3d.nn.discriminator import DualDiscriminator
    return DualDiscriminator(img_resolution=cfg.img_resolution, channels=cfg.d_channels,
                             channel_base=cfg.d_channel_base, channel_max=cfg.d_channel_max,
                             c_dim=2 if cfg.camera_conditioning else 0, cmap_dim=cfg.cmap_dim,
                             mapping_layers=cfg.d_mapping_layers, mbstd_group_size=cfg.mbstd_group_size,
                             mbstd_num_channels=cfg.mbstd_num_channels, num_fp16_res=cfg.num_fp16_res,
                             fp16_dtype=cfg.fp16_dtype, conv_clamp=cfg.d_conv_clamp,
                             channels_last=cfg.channels_last, device=device)


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())
