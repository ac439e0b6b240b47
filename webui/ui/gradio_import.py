"""Import gradio without its stub regeneration: 2 of the 5 seconds ``import gradio`` takes on a small machine.

Every component class gradio defines at import goes through ``gradio.component_meta.create_or_modify_pyi``,
which reads and parses the class's source file twice (a pure-Python line split of the whole file each time) to
compare it with the ``.pyi`` stub beside it, for editors. A server never needs the stubs: skipping this makes
``webui serve`` start about 2 s sooner (measured 5.1-5.5 s -> 3.0-3.2 s for ``import gradio`` on 2 cores).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

_MODULE = "gradio.component_meta"
_STUB_WRITER = "create_or_modify_pyi"


def skip_stub_regeneration() -> None:
    """Before gradio is imported: make its component classes skip the stub comparison. Once per process; a
    no-op when gradio is already imported or a gradio release no longer has the function."""
    if _MODULE in sys.modules or any(isinstance(f, _StubSkippingFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _StubSkippingFinder())


def _no_stubs(*_args: object, **_kwargs: object) -> None:
    """Stands in for gradio's stub writer."""


class _StubSkippingFinder(importlib.abc.MetaPathFinder):
    """Finds ``gradio.component_meta`` as usual, and replaces the stub writer once the module has run (before
    any component class is made: they all need the module's metaclass first)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _MODULE:
            return None
        sys.meta_path.remove(self)  # one module, once: every other import goes straight to the usual finders
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _StubSkippingLoader(spec.loader)
        return spec


class _StubSkippingLoader(importlib.abc.Loader):
    """The usual loader (source lookups, resources), with the stub writer replaced after the module runs."""

    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        if callable(getattr(module, _STUB_WRITER, None)):
            setattr(module, _STUB_WRITER, _no_stubs)
