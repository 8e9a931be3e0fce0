"""Every Triton kernel variant the interpreter ran in this test session, compiled for ``sm_90`` ahead of time.

Without a GPU the kernel tests run under Triton's interpreter, which accepts what the compiler rejects (a kernel
once passed every CPU test and failed to compile on the GPU: a non-constexpr global).  This pytest plugin records
each interpreted launch (the kernel, its arguments' types, its constexpr values and launch options); at the end
of the session a child process without the interpreter compiles each distinct variant for an H100 and a variant
the compiler rejects fails the run.  ``GET3D_TRITON_COMPILE_CHECK=0`` turns it off.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64", "int64": "i64",
           "int32": "i32", "int16": "i16", "int8": "i8", "uint8": "u8", "bool": "i1"}
_OPTIONS = ("num_warps", "num_stages")
_seen: dict[str, dict] = {}
_unrecorded: set[str] = set()   # kernels with a launch whose arguments could not be typed


def _kind(value):
    """A runtime argument → its type in Triton's signature notation, or ``("const", value)``."""
    import torch
    if isinstance(value, torch.Tensor):
        return "*" + _DTYPES[str(value.dtype).removeprefix("torch.")]
    if value is None or isinstance(value, str):
        return ["const", value]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -2**31 <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    return ["const", repr(value)]


_PARAMS: dict = {}


def _record(fn, args, kwargs, into: dict | None = None) -> None:
    import inspect
    params = _PARAMS.get(fn)
    if params is None:
        params = _PARAMS[fn] = inspect.signature(fn).parameters
    bound = dict(zip(params, args))
    bound.update({k: v for k, v in kwargs.items() if k in params})
    sig, consts = {}, {}
    for name, p in params.items():
        if name not in bound:
            continue                                   # a default: the compiler uses it as declared
        if "constexpr" in str(p.annotation):
            consts[name] = bound[name]
            continue
        kind = _kind(bound[name])
        if isinstance(kind, list):
            consts[name] = kind[1]
        else:
            sig[name] = kind
    options = {k: kwargs[k] for k in _OPTIONS if k in kwargs}
    entry = {"module": fn.__module__, "name": fn.__qualname__, "signature": sig, "constexprs": consts,
             "options": options}
    try:
        key = json.dumps(entry, sort_keys=True)
    except TypeError:                                  # a constexpr value JSON cannot carry: not checked
        return
    (_seen if into is None else into).setdefault(key, entry)


def install() -> bool:
    """Wrap the interpreter's launch (only when this session interprets Triton and the check is on)."""
    if os.environ.get("TRITON_INTERPRET") != "1" or os.environ.get("GET3D_TRITON_COMPILE_CHECK", "1") == "0":
        return False
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:
        return False
    run = InterpretedFunction.run

    def recording_run(self, *args, grid, warmup, **kwargs):
        try:
            _record(self.fn, args, kwargs)
        except (KeyError, TypeError, ValueError):      # recording never breaks a test: the kernel is named
            _unrecorded.add(f"{self.fn.__module__}.{self.fn.__qualname__}")
        return run(self, *args, grid=grid, warmup=warmup, **kwargs)

    InterpretedFunction.run = recording_run
    return True


_COMPILE = r"""
import importlib, json, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
target = GPUTarget("cuda", 90, 32)
entries = json.load(sys.stdin)
failed = 0
for e in entries:
    fn = getattr(importlib.import_module(e["module"]), e["name"])
    sig = dict(e["signature"])
    sig.update({k: "constexpr" for k in e["constexprs"]})
    sig = {a: sig[a] for a in fn.arg_names if a in sig}
    try:
        kernel = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=e["constexprs"]), target=target,
                                options=e["options"] or None)
        assert kernel.asm["cubin"], "no cubin"
    except Exception as exc:
        if isinstance(exc, (FileNotFoundError, ImportError)) or "ptxas" in str(exc) and "not found" in str(exc):
            print(f"SKIPPED: Triton cannot compile for CUDA here ({type(exc).__name__}: {exc})"[:400])
            sys.exit(0)
        failed += 1
        msg = [line.strip() for line in str(exc).splitlines() if line.strip()] or [""]
        print(f"FAILED {e['module']}.{e['name']} {e['constexprs']}: {type(exc).__name__}: "
              f"{msg[0]} ... {msg[-1]}"[:600])
print(f"compiled {len(entries) - failed} of {len(entries)}")
sys.exit(1 if failed else 0)
"""


def compile_recorded(entries: list[dict] | None = None, timeout: float = 1200) -> tuple[int, str]:
    """Compile every recorded variant (or ``entries``) in child processes without the interpreter, one per core up
    to 4: ``(returncode, report)``."""
    entries = list(_seen.values()) if entries is None else entries
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    n = max(1, min(4, os.cpu_count() or 1, len(entries)))
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", _COMPILE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=REPO) for _ in range(n)]
    outs = [p.communicate(json.dumps(entries[i::n]), timeout=timeout) for i, p in enumerate(procs)]
    rc = max(p.returncode for p in procs)
    report = "\n".join((o + e[-2000:]).strip() for o, e in outs)
    return rc, f"{report}\n({len(entries)} variants in {time.perf_counter() - t0:.0f} s, {n} processes)"


class CompileCheck:
    """The plugin: at the end of a session that interpreted kernels, compile them and fail the run on a rejection."""

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session, exitstatus):
        if not _seen:
            return
        rc, report = compile_recorded()
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = [f"Triton kernels compiled for sm_90 ahead of time ({len(_seen)} variants the interpreter ran):"]
        lines += report.splitlines()[-40:]
        if _unrecorded:
            lines.append(f"not checked (arguments of an unknown type): {', '.join(sorted(_unrecorded))}")
        if "No module named 'triton.backends.nvidia'" in report:
            lines.append("SKIPPED: Triton has no CUDA backend here")
            rc = 0
        if tr is not None:
            tr.write_line("")
            for line in lines:
                tr.write_line(line)
        if rc != 0 and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
