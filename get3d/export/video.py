"""Image grids, GIF and MP4 files of preview frames, written atomically and reproducibly (MP4 through the
ffmpeg binary shipped in the ``imageio-ffmpeg`` wheel, so nothing needs a system install)."""
from __future__ import annotations

import io
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from get3d.io import atomic_write_bytes, file_mode


def grid(images: Sequence[np.ndarray], cols: int, pad: int = 2, background: int = 255) -> np.ndarray:
    """uint8 ``[H, W, 3]`` images → one grid image, ``cols`` per row."""
    if not images:
        raise ValueError("grid: no images")
    h, w = images[0].shape[:2]
    cols = max(1, min(cols, len(images)))
    rows = math.ceil(len(images) / cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), background, np.uint8)
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[y:y + h, x:x + w] = im[..., :3]
    return out


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    from get3d.meshio import png_bytes

    atomic_write_bytes(path, png_bytes(np.ascontiguousarray(image)), fsync=False)
    return Path(path)


def write_gif(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: int) -> Path:
    from PIL import Image

    imgs = [Image.fromarray(np.ascontiguousarray(f[..., :3])) for f in frames]
    buf = io.BytesIO()
    imgs[0].save(buf, format="GIF", save_all=True, append_images=imgs[1:], duration=round(1000 / fps), loop=0,
                 optimize=False)
    atomic_write_bytes(path, buf.getvalue(), fsync=False)
    return Path(path)


def write_mp4(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: int) -> Path:
    """H.264 (yuv420p, even frame sizes) with bit-exact, metadata-free muxing: same frames → same bytes."""
    import imageio_ffmpeg

    path = Path(path)
    h, w = frames[0].shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"{path}: MP4 (yuv420p) needs even frame sizes, got {w}x{h}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".mp4", dir=str(path.parent))
    os.close(fd)
    try:
        writer = imageio_ffmpeg.write_frames(
            tmp, (w, h), fps=fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p", macro_block_size=2,
            quality=None, ffmpeg_log_level="error",
            output_params=["-threads", "1", "-crf", "18", "-map_metadata", "-1", "-fflags", "+bitexact",
                           "-flags:v", "+bitexact", "-movflags", "+faststart"])
        writer.send(None)
        for f in frames:
            writer.send(np.ascontiguousarray(f[..., :3]))
        writer.close()
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def write_video(stem: str | os.PathLike, frames: Sequence[np.ndarray], fps: int, formats: Sequence[str]) -> dict:
    """``<stem>.gif`` / ``<stem>.mp4`` for each of ``formats``; returns ``{format: path}``."""
    out = {}
    if "gif" in formats:
        out["gif"] = str(write_gif(f"{stem}.gif", frames, fps))
    if "mp4" in formats:
        out["mp4"] = str(write_mp4(f"{stem}.mp4", frames, fps))
    return out
