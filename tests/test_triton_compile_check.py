"""The session-end compile check (tests/triton_compile_check.py) rejects a kernel that only the interpreter runs,
and passes a sound one; the recorder turns launch arguments into Triton's signature notation."""
import sys

import pytest
import torch
import triton_compile_check as tcc

pytest.importorskip("triton")

_KERNELS = '''
import triton
import triton.language as tl

_SCALE = 3          # a plain global: the interpreter reads it, the compiler refuses it


@triton.jit
def sound(X, Y, N, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(Y + i, tl.load(X + i, mask=i < N) * 2.0, mask=i < N)


@triton.jit
def unsound(X, Y, N, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(Y + i, tl.load(X + i, mask=i < N) * _SCALE, mask=i < N)
'''


def test_a_kernel_only_the_interpreter_runs_fails_the_check(tmp_path, monkeypatch):
    (tmp_path / "tcc_probe.py").write_text(_KERNELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{':'.join(p for p in sys.path if p)}")
    import tcc_probe
    x = torch.ones(10)
    seen: dict = {}
    for name in ("sound", "unsound"):
        fn = getattr(getattr(tcc_probe, name), "fn", getattr(tcc_probe, name))
        tcc._record(fn, (x, torch.empty_like(x), 10), {"BLOCK": 16, "num_warps": 1}, into=seen)
    entries = list(seen.values())
    assert [e["signature"] for e in entries] == [{"X": "*fp32", "Y": "*fp32", "N": "i32"}] * 2
    assert entries[0]["constexprs"] == {"BLOCK": 16} and entries[0]["options"] == {"num_warps": 1}
    rc, report = tcc.compile_recorded(entries[:1])
    if "triton.backends.nvidia" in report or "SKIPPED" in report:
        pytest.skip(f"Triton cannot compile for CUDA here: {report}")
    assert rc == 0 and "compiled 1 of 1" in report, report
    rc, report = tcc.compile_recorded(entries[1:])
    assert rc != 0 and "FAILED tcc_probe.unsound" in report and "_SCALE" in report, report
