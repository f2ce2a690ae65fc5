"""Load a script of the repository that is not part of the package (a benchmark, an example) as
a module, so tests can call its functions."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["load_script"]


def load_script(path: Path) -> ModuleType:
    """The module that `path` defines, named `script_<file stem>` (run once per call). It is in
    `sys.modules` while it runs, as dataclasses with postponed annotations need."""
    name = f"script_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
