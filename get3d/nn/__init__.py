"""GET3D networks: mapping, tri-plane / 3-D conv generators, point decoders, discriminators."""
from get3d.nn.config import ModelConfig, build_discriminators, build_generator, count_parameters, small_config

__all__ = ["ModelConfig", "build_generator", "build_discriminators", "count_parameters", "small_config"]
