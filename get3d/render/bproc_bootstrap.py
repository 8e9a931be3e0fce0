"""Run BlenderProc 2.8.0 on top of the ``bpy==4.2.0`` wheel (Blender as a Python module).

Render-venv side: imports only the stdlib, numpy, bpy and blenderproc.  Import this module *instead of*
``blenderproc`` and use what :func:`load` returns::

    from bproc_bootstrap import load
    bproc = load()
    bproc.init()

BlenderProc 2.8.0 expects to be started by ``blenderproc run`` inside Blender's own Python.  Each of the
following was seen failing with the wheel, and is handled here:

1. ``import blenderproc`` refuses to run outside ``blenderproc run``: we first import the package with
   ``OUTSIDE_OF_THE_INTERNAL_BLENDER_PYTHON_ENVIRONMENT_BUT_IN_RUN_SCRIPT`` (its body then does nothing),
   patch what needs patching, then set ``INSIDE_OF_THE_INTERNAL_BLENDER_PYTHON_ENVIRONMENT=1`` and re-run
   the package body.
2. Its setup step pip-installs into Blender's Python and parses Blender's argv: ``SetupUtility.setup`` is
   replaced by one that only sets BlenderProc's temp dir (``BLENDERPROC_TEMP_DIR`` or a fresh folder that
   is removed at exit).
3. Its ``__init__`` removes site-packages from ``sys.path``: we restore ``sys.path`` afterwards.
4. ``bproc.init()`` sets the UI language to ``en_US``, which the wheel lacks: ``init`` is replaced by an
   equivalent that skips the language step.
5. Smooth shading looks for the ``ESSENTIALS`` assets relative to ``sys.executable``: path lookup is
   pointed at the wheel's ``bpy/4.2`` folder.
6. The process segfaults at exit (code 139) because bpy types stay in ``typing``'s caches: an ``atexit``
   hook registered *after* bpy's clears those caches before bpy's own exit hook runs (atexit is LIFO).
   :func:`hard_exit` is a last resort for callers that want no interpreter teardown at all.
"""
from __future__ import annotations

import atexit
import importlib
import os
import shutil
import sys
import tempfile

_BPROC = None


def _clear_typing_caches() -> None:
    import typing

    for clear in list(getattr(typing, "_cleanups", ())):
        try:
            clear()
        except Exception:  # noqa: BLE001, S110 - best effort at exit
            pass


def hard_exit(code: int = 0) -> None:
    """Flush stdio and leave without interpreter teardown (no chance of a teardown crash)."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _find_blender_dir(start: str, major: str) -> str:
    """The folder holding ``<major>/datafiles`` (the wheel's ``site-packages/bpy``), searched upwards."""
    d = start
    while True:
        if os.path.isdir(os.path.join(d, major, "datafiles")):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            raise RuntimeError(f"cannot find Blender's '{major}/datafiles' folder above {start}")
        d = parent


def _restore_sys_path(saved_path: list) -> None:
    """Append every entry of ``saved_path`` that ``sys.path`` has lost (order of the rest kept)."""
    for p in saved_path:
        if p not in sys.path:
            sys.path.append(p)


def load():
    """Import and return ``blenderproc`` working on the bpy wheel (idempotent).

    The steps run in a fixed order; numbers refer to the workarounds in the module docstring.
    """
    global _BPROC
    if _BPROC is not None:
        return _BPROC

    saved_path = list(sys.path)

    import bpy

    major = f"{bpy.app.version[0]}.{bpy.app.version[1]}"
    bpy_dir = _find_blender_dir(os.path.dirname(os.path.abspath(bpy.__file__)), major)

    blenderproc, setup_cls = _import_package_shell()       # (1) first half
    _patch_setup(setup_cls, saved_path, bpy_dir, major)    # (2), (3), (5)
    bproc = _run_package_body(blenderproc, saved_path)     # (1) second half, (3)
    _patch_init(bproc)                                     # (4)

    # (6) registered after bpy's hook, so it runs first.
    atexit.register(_clear_typing_caches)

    _BPROC = bproc
    return bproc


def _import_package_shell():
    """(1) Import the package shell without running its Blender-only body; returns it and ``SetupUtility``."""
    os.environ.pop("INSIDE_OF_THE_INTERNAL_BLENDER_PYTHON_ENVIRONMENT", None)
    os.environ["OUTSIDE_OF_THE_INTERNAL_BLENDER_PYTHON_ENVIRONMENT_BUT_IN_RUN_SCRIPT"] = "1"
    import blenderproc
    from blenderproc.python.utility import SetupUtility as setup_mod

    return blenderproc, setup_mod.SetupUtility


def _patch_setup(setup_cls, saved_path: list, bpy_dir: str, major: str) -> None:
    """Replace ``SetupUtility.setup`` / ``setup_pip`` / ``determine_python_paths`` (workarounds 2, 3, 5)."""

    # (2) no pip, no argv parsing: only a temp dir.
    def _setup(user_required_packages=None, blender_path=None, major_version=None,
               reinstall_packages=False, debug_args=None):
        _restore_sys_path(saved_path)  # (3) the package body has just stripped site-packages
        if not setup_cls.main_setup_called:
            setup_cls.main_setup_called = True
            temp = os.environ.get("BLENDERPROC_TEMP_DIR")
            if temp:
                os.makedirs(temp, exist_ok=True)
            else:
                temp = tempfile.mkdtemp(prefix="bproc-")
                atexit.register(shutil.rmtree, temp, True)
            setup_cls.setup_utility_paths(temp)
        return sys.argv

    def _setup_pip(*args, **kwargs):
        raise RuntimeError("BlenderProc tried to pip-install packages; install them into the render venv instead")

    # (5) Blender's data files live beside the bpy module, not beside sys.executable.
    orig_paths = setup_cls.determine_python_paths

    def _paths(blender_path=None, major_version=None):
        if blender_path is None:
            blender_path, major_version = bpy_dir, major
        return orig_paths(blender_path, major_version)

    setup_cls.setup = staticmethod(_setup)
    setup_cls.setup_pip = staticmethod(_setup_pip)
    setup_cls.determine_python_paths = staticmethod(_paths)


def _run_package_body(blenderproc, saved_path: list):
    """(1) Run the real package body now (reload with the inside-Blender flag); returns the package."""
    os.environ["INSIDE_OF_THE_INTERNAL_BLENDER_PYTHON_ENVIRONMENT"] = "1"
    pythonpath = os.environ.get("PYTHONPATH")
    try:
        bproc = importlib.reload(blenderproc)
    finally:
        # (3) the body strips site-packages (and PYTHONPATH): put them back.
        _restore_sys_path(saved_path)
        if pythonpath is not None:
            os.environ["PYTHONPATH"] = pythonpath
    return bproc


def _patch_init(bproc) -> None:
    """(4) init without the en_US language switch."""
    import bpy
    from blenderproc.python.renderer import RendererUtility
    from blenderproc.python.utility import Initializer as init_mod
    from blenderproc.python.utility.GlobalStorage import GlobalStorage

    def _init(clean_up_scene: bool = True):
        if GlobalStorage.is_in_storage("bproc_init_complete") and GlobalStorage.get("bproc_init_complete"):
            raise RuntimeError("bproc.init() may run once per process; use bproc.clean_up() between objects")
        if clean_up_scene:
            init_mod.clean_up(clean_up_camera=True)
        bpy.context.scene.render.engine = "CYCLES"
        RendererUtility.set_render_devices()
        init_mod._Initializer.set_default_parameters()
        GlobalStorage.add("bproc_init_complete", True)

    init_mod.init = _init
    bproc.init = _init
