"""Custom autograd ops used on hot paths (pure PyTorch; each has a reference it is tested against)."""
from get3d.nn.ops.conv import conv2d

__all__ = ["conv2d"]
