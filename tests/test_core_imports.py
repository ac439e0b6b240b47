"""Principle 1: webui.core never imports gradio, fastapi, uvicorn or torch; `import webui` stays light."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import textwrap

import webui.core

BLOCKED = ("gradio", "fastapi", "uvicorn", "starlette", "torch", "transformers", "llama_cpp")


def run_blocked(code: str) -> subprocess.CompletedProcess[str]:
    blocker = textwrap.dedent(
        f"""
        import sys
        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {BLOCKED!r}:
                    raise ImportError("blocked import: " + name)
                return None
        sys.meta_path.insert(0, Blocker())
        """
    )
    return subprocess.run([sys.executable, "-c", blocker + code], capture_output=True, text=True, timeout=120)


def test_every_core_module_imports_with_heavy_frameworks_blocked() -> None:
    # Every module of every subpackage too (walk_packages imports packages only, which must stay light anyway).
    modules = [m.name for m in pkgutil.walk_packages(webui.core.__path__, prefix="webui.core.")]
    assert "webui.core.engine" in modules and "webui.core.templates.store" in modules
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    result = run_blocked(code)
    assert result.returncode == 0, result.stderr


def test_blocker_really_blocks() -> None:
    # Guards the test above against passing vacuously.
    result = run_blocked("import gradio")
    assert result.returncode != 0 and "blocked import: gradio" in result.stderr


def test_cli_and_loader_registry_do_not_import_backends() -> None:
    code = (
        "import webui, webui.cli, webui.app, loaders.llama_cpp\n"
        "from webui.core.registry import LoaderRegistry\n"
        "r = LoaderRegistry.from_entry_points(); cls = r.get('llama.cpp')\n"
        "assert cls.settings_model.model_fields\n"
    )
    result = run_blocked(code)
    assert result.returncode == 0, result.stderr
