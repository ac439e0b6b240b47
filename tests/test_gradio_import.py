"""gradio imported the way `webui serve` imports it: without comparing every component's source with its stub."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from webui.config import PROJECT_ROOT

PROBE = textwrap.dedent(
    """
    import sys
    from webui.ui.gradio_import import skip_stub_regeneration, _StubSkippingFinder
    skip_stub_regeneration()
    skip_stub_regeneration()  # twice: still one finder
    assert sum(isinstance(f, _StubSkippingFinder) for f in sys.meta_path) == 1
    import gradio as gr
    import gradio.component_meta as meta
    print("writer", meta.create_or_modify_pyi.__name__)
    print("finders left", sum(isinstance(f, _StubSkippingFinder) for f in sys.meta_path))
    with gr.Blocks() as blocks:
        box = gr.Textbox(label="Name")
        out = gr.Textbox()
        box.submit(lambda name: f"Hello {name}", box, out)
    print("labels", [c.get("props", {}).get("label") for c in blocks.get_config_file()["components"]])
    skip_stub_regeneration()  # after the import: nothing to do
    print("finders after", sum(isinstance(f, _StubSkippingFinder) for f in sys.meta_path))
    """
)


def test_gradio_builds_a_page_without_its_stub_writer() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "writer _no_stubs" in lines
    assert "finders left 0" in lines and "finders after 0" in lines
    assert any(line.startswith("labels") and "'Name'" in line for line in lines), lines
