"""Snapshots: inference (G_ema + model config + provenance) and full training state.

File format (both kinds)::

    b"GET3DCKPT\\x01\\n"                 magic (11 bytes)
    <u64 little-endian>                  header length
    <header JSON>                        kind, nimg, payload_bytes, sha256 of the payload, created, format
    <payload>                            torch.save of a dict of tensors / plain Python values

Written atomically (temp file + fsync + ``os.replace`` + fsync of the folder), so a crash leaves either the
old set of files or the new one. A truncated or bit-flipped file fails the length or SHA-256 check and
:class:`CorruptCheckpointError` names the file and what is wrong. Payloads load with
``torch.load(weights_only=True)``: no pickled code runs when a snapshot is read.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import struct
import time
from pathlib import Path
from typing import Any

import torch

from get3d.io import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

MAGIC = b"GET3DCKPT\x01\n"
FORMAT_VERSION = 1
KINDS = ("state", "network")
_NAME_RE = re.compile(r"^(state|network)-(\d{12})\.pt$")


class CheckpointError(RuntimeError):
    """A snapshot cannot be used."""


class CorruptCheckpointError(CheckpointError):
    def __init__(self, path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"corrupt checkpoint {self.path}: {reason}")


def snapshot_name(kind: str, nimg: int) -> str:
    if kind not in KINDS:
        raise ValueError(f"snapshot kind {kind!r} not in {KINDS}")
    return f"{kind}-{int(nimg):012d}.pt"


def save_checkpoint(path, kind: str, nimg: int, payload: dict, extra_header: dict | None = None) -> Path:
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    header = {"format": FORMAT_VERSION, "kind": kind, "nimg": int(nimg), "payload_bytes": len(data),
              "sha256": hashlib.sha256(data).hexdigest(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if extra_header:
        header.update(extra_header)
    hb = json.dumps(header, sort_keys=True).encode("utf-8")
    atomic_write_bytes(path, MAGIC + struct.pack("<Q", len(hb)) + hb + data)
    return Path(path)


def read_header(path) -> dict:
    header, _ = _read(path, payload=False)
    return header


def _read(path, payload: bool = True):
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    if len(raw) < len(MAGIC) + 8:
        raise CorruptCheckpointError(path, f"truncated: only {len(raw)} bytes")
    if raw[:len(MAGIC)] != MAGIC:
        raise CorruptCheckpointError(path, "not a GET3D checkpoint (bad magic bytes)")
    (hlen,) = struct.unpack("<Q", raw[len(MAGIC):len(MAGIC) + 8])
    start = len(MAGIC) + 8
    if start + hlen > len(raw):
        raise CorruptCheckpointError(path, f"truncated inside the header ({len(raw)} bytes)")
    try:
        header = json.loads(raw[start:start + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptCheckpointError(path, f"unreadable header ({exc})") from None
    body = raw[start + hlen:]
    want = header.get("payload_bytes")
    if len(body) != want:
        raise CorruptCheckpointError(path, f"truncated: payload has {len(body)} bytes, header says {want}")
    digest = hashlib.sha256(body).hexdigest()
    if digest != header.get("sha256"):
        raise CorruptCheckpointError(path, f"checksum mismatch (sha256 {digest[:12]}…, header says "
                                           f"{str(header.get('sha256'))[:12]}…)")
    if not payload:
        return header, None
    try:
        obj = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - checksum passed, so this is a format/version problem
        raise CorruptCheckpointError(path, f"payload does not load ({type(exc).__name__}: {exc})") from None
    return header, obj


def load_checkpoint(path, kind: str | None = None) -> tuple[dict, dict]:
    """Verify and load a snapshot; returns ``(header, payload)``."""
    header, obj = _read(path)
    if kind is not None and header.get("kind") != kind:
        raise CheckpointError(f"checkpoint {path} is a {header.get('kind')!r} snapshot, expected {kind!r}")
    return header, obj


def list_snapshots(ckpt_dir, kind: str) -> list[tuple[int, Path]]:
    """``[(nimg, path)]`` newest first; temp files of interrupted writes are ignored."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = _NAME_RE.match(p.name)
        if m and m.group(1) == kind:
            out.append((int(m.group(2)), p))
    return sorted(out, reverse=True)


def find_resume_state(ckpt_dir) -> tuple[Path, dict, dict] | None:
    """Newest complete training state: ``(path, header, payload)``, or None when there is none.

    A corrupt newest file is named in a warning and the previous one is tried. If snapshots exist but all
    are corrupt the run must not silently restart from scratch: :class:`CheckpointError` lists them.
    """
    candidates = list_snapshots(ckpt_dir, "state")
    bad = []
    for _, path in candidates:
        try:
            header, payload = load_checkpoint(path, "state")
        except CorruptCheckpointError as exc:
            log.warning("%s; falling back to the previous training state", exc)
            bad.append(str(exc))
            continue
        if bad:
            log.warning("resuming from %s (skipped %d corrupt newer snapshot(s))", path, len(bad))
        return path, header, payload
    if bad:
        raise CheckpointError("no usable training state: " + "; ".join(bad))
    return None


def prune_snapshots(ckpt_dir, kind: str, keep: int) -> list[Path]:
    if keep <= 0:
        return []
    removed = []
    for _, p in list_snapshots(ckpt_dir, kind)[keep:]:
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
    for tmp in Path(ckpt_dir).glob(".*.tmp"):  # leftovers of writes killed mid-way
        try:
            if time.time() - tmp.stat().st_mtime > 60:
                tmp.unlink()
        except FileNotFoundError:
            pass
    return removed


def write_latest_pointer(ckpt_dir, kind: str, path: Path, nimg: int) -> None:
    p = Path(ckpt_dir) / "latest.json"
    try:
        cur = json.loads(p.read_text()) if p.exists() else {}
    except (OSError, json.JSONDecodeError):
        cur = {}
    cur[kind] = {"path": path.name, "nimg": int(nimg), "kimg": nimg / 1000.0}
    atomic_write_json(p, cur)


def load_inference(path) -> dict:
    """Inference snapshot payload: ``{"G_ema": state_dict, "model_config": dict, "provenance": dict, ...}``."""
    _, obj = load_checkpoint(path, "network")
    return obj


# ---------------------------------------------------------------- RNG state helpers (all JSON/tensor safe)

def capture_rng(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    import random

    import numpy as np
    np_state = np.random.get_state(legacy=False)
    np_state = {"bit_generator": np_state["bit_generator"], "state": {"key": np_state["state"]["key"].tolist(),
                                                                         "pos": int(np_state["state"]["pos"])},
                "has_gauss": int(np_state["has_gauss"]), "gauss": float(np_state["gauss"])}
    out = {"python": random.getstate(), "numpy": np_state, "torch": torch.get_rng_state(),
           "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
           "generators": {k: g.get_state() for k, g in (generators or {}).items()}}
    return out


def restore_rng(state: dict, generators: dict[str, torch.Generator] | None = None) -> None:
    import random

    import numpy as np
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    s = state["numpy"]
    np.random.set_state({"bit_generator": s["bit_generator"],
                         "state": {"key": np.asarray(s["state"]["key"], dtype=np.uint32), "pos": s["state"]["pos"]},
                         "has_gauss": s["has_gauss"], "gauss": s["gauss"]})
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        cur = torch.cuda.device_count()
        saved = state["cuda"]
        if len(saved) == cur:
            torch.cuda.set_rng_state_all(saved)
        else:
            log.warning("checkpoint has CUDA RNG states for %d devices, this process sees %d: not restored",
                        len(saved), cur)
    for k, g in (generators or {}).items():
        if k in state.get("generators", {}):
            g.set_state(state["generators"][k])
