"""GET3D: a GAN that generates explicit textured triangle meshes, as a library behind a reproducible pipeline."""
from get3d import offline as _offline

_offline.apply()
__version__ = "0.1.0"
