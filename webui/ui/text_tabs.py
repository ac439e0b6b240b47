"""Default and Notebook tabs: raw text completion with the Parameters tab's settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import gradio as gr

from webui.core.engine import EngineError
from webui.core.service import Service
from webui.ui.convert import GENERATING, InputError, throttled_text
from webui.ui.parameters_tab import ParametersTab
from webui.ui.state import DEFAULT, NOTEBOOK, SessionJobs

# One page update: (text box, status markdown)
Update = tuple[Any, Any]


class TextHandlers:
    """Completion handlers; ``values`` are the Parameters tab's widget values."""

    def __init__(self, service: Service, params: ParametersTab) -> None:
        self.service = service
        self.params = params

    def _complete(
        self, jobs: SessionJobs, slot: str, prompt: str, values: Sequence[Any], render: Callable[[str], Any]
    ) -> Iterator[Update]:
        """Stream the completion of ``prompt`` as ``render(text so far)``, ~every 50 ms, then the final text."""
        if jobs.busy(slot):
            gr.Warning("Text is still being generated: press Stop first.")
            yield gr.skip(), "⚠️ Text is still being generated: press Stop first."
            return
        try:
            job = self.service.stream_completion(prompt, self.params.read(values))
        except (InputError, EngineError) as exc:
            gr.Warning(str(exc))
            yield gr.skip(), f"⚠️ {exc}"
            return
        if not jobs.start(slot, job):
            job.cancel()
            yield gr.skip(), "⚠️ Text is still being generated: press Stop first."
            return
        text = ""
        status = ""
        try:
            yield render(text), GENERATING
            try:
                for text in throttled_text(job):
                    yield render(text), gr.skip()
            except EngineError as exc:
                gr.Warning(str(exc))
                status = f"⚠️ {exc}"
        finally:
            jobs.finish(slot, job)
            job.cancel()  # no-op when it ended; stops the model if the page went away
        yield render(text), status or self.service.status_line()

    def default(self, prompt: str, jobs: SessionJobs, *values: Any) -> Iterator[Update]:
        """Default tab: the completion of the input box goes into the output box."""
        yield from self._complete(jobs, DEFAULT, prompt or "", values, lambda text: text)

    def notebook(self, text: str, jobs: SessionJobs, *values: Any) -> Iterator[Update]:
        """Notebook tab: the completion is appended to the one text box."""
        start = text or ""
        yield from self._complete(jobs, NOTEBOOK, start, values, lambda generated: start + generated)

    @staticmethod
    def stop_default(jobs: SessionJobs) -> None:
        jobs.cancel(DEFAULT)

    @staticmethod
    def stop_notebook(jobs: SessionJobs) -> None:
        jobs.cancel(NOTEBOOK)


class TextTabs:
    """Draws the Default and Notebook tabs; ``wire`` connects them once the Parameters tab exists."""

    def __init__(self, service: Service, params: ParametersTab) -> None:
        self.handlers = TextHandlers(service, params)
        self.params = params

    def build_default(self) -> None:
        """Input box -> output box."""
        with gr.Row():
            with gr.Column():
                self.prompt = gr.Textbox(label="Input", lines=20, max_lines=40, elem_id="default-input")
            with gr.Column():
                self.output = gr.Textbox(
                    label="Output", lines=20, max_lines=40, buttons=["copy"], elem_id="default-output"
                )
        with gr.Row():
            self.default_generate = gr.Button("Generate", variant="primary", elem_id="default-generate")
            self.default_stop = gr.Button("Stop", variant="stop", elem_id="default-stop")
        self.default_status = gr.Markdown(elem_id="default-status")

    def build_notebook(self) -> None:
        """One box; the completion is appended to it."""
        self.notebook = gr.Textbox(label="Notebook", lines=24, max_lines=60, elem_id="notebook-text")
        with gr.Row():
            self.notebook_generate = gr.Button("Generate", variant="primary", elem_id="notebook-generate")
            self.notebook_stop = gr.Button("Stop", variant="stop", elem_id="notebook-stop")
        self.notebook_status = gr.Markdown(elem_id="notebook-status")

    def wire(self, jobs: gr.State) -> list[Any]:
        """Connect both tabs' buttons; returns the generation events."""
        h = self.handlers
        params = self.params.components
        events = [
            self.default_generate.click(
                h.default,
                inputs=[self.prompt, jobs, *params],
                outputs=[self.output, self.default_status],
                show_progress="minimal",
                concurrency_limit=None,
            ),
            self.notebook_generate.click(
                h.notebook,
                inputs=[self.notebook, jobs, *params],
                outputs=[self.notebook, self.notebook_status],
                show_progress="minimal",
                concurrency_limit=None,
            ),
        ]
        self.default_stop.click(
            h.stop_default, inputs=[jobs], outputs=None, queue=False, show_progress="hidden"
        )
        self.notebook_stop.click(
            h.stop_notebook, inputs=[jobs], outputs=None, queue=False, show_progress="hidden"
        )
        return events
