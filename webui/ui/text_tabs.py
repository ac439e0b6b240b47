"""Default and Notebook tabs: raw text completion with the Parameters tab's settings.

Default: the prompt on the left, the output on the right; Continue completes prompt + output further.
Notebook: one text, completed in place; Undo restores it as it was before the last Generate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import gradio as gr

from webui.core.service import EngineError, Service
from webui.ui.convert import GENERATING, InputError, throttled_text, token_count_text
from webui.ui.helpers import count_tokens
from webui.ui.parameters_tab import ParametersTab
from webui.ui.state import DEFAULT, NOTEBOOK, SessionJobs

# One page update: (text box, status markdown, token count markdown)
Update = tuple[Any, Any, Any]
BUSY = "Text is still being generated: press Stop first."


class TextHandlers:
    """Completion handlers; ``values`` are the Parameters tab's widget values."""

    def __init__(self, service: Service, params: ParametersTab) -> None:
        self.service = service
        self.params = params

    def _count(self, label: str, text: str) -> str:
        return token_count_text(label, count_tokens(self.service, text))

    def _complete(
        self,
        jobs: SessionJobs,
        slot: str,
        prompt: str,
        values: Sequence[Any],
        render: Callable[[str], Any],
        counts: Callable[[str], str],
    ) -> Iterator[Update]:
        """Stream the completion of ``prompt`` as ``render(text so far)``, ~every 50 ms, then the final text
        and ``counts(text)``. If the job is discarded meanwhile (Undo), the box is left alone at the end."""
        if jobs.busy(slot):
            gr.Warning(BUSY)
            yield gr.skip(), f"⚠️ {BUSY}", gr.skip()
            return
        try:
            job = self.service.stream_completion(prompt, self.params.read(values))
        except (InputError, EngineError) as exc:
            gr.Warning(str(exc))
            yield gr.skip(), f"⚠️ {exc}", gr.skip()
            return
        if not jobs.start(slot, job):
            job.cancel()
            yield gr.skip(), f"⚠️ {BUSY}", gr.skip()
            return
        text = ""
        status = ""
        try:
            yield render(text), GENERATING, gr.skip()
            try:
                for text in throttled_text(job):
                    if not jobs.owns(slot, job):
                        break
                    yield render(text), gr.skip(), gr.skip()
            except EngineError as exc:
                gr.Warning(str(exc))
                status = f"⚠️ {exc}"
            discarded = not jobs.owns(slot, job)
        finally:
            jobs.finish(slot, job)
            job.cancel()  # no-op when it ended; stops the model if the page went away
        # The extensions' errors (each names its extension), shown as chat shows them.
        for message in job.warnings:
            gr.Warning(message)
        notes = [f"⚠️ {message}" for message in job.warnings]
        status = status or "\n\n".join([*notes, self.service.status_line()])
        if discarded:
            yield gr.skip(), status, gr.skip()
        else:
            yield render(text), status, counts(text)

    # -- Default tab ------------------------------------------------------------------------------------

    def default_counts(self, prompt: str, output: str = "") -> str:
        """The prompt's token count, and prompt + output's once there is output."""
        text = self._count("Prompt", prompt or "")
        if output:
            text += " · " + self._count("prompt + output", (prompt or "") + output)
        return text

    def default(self, prompt: str, jobs: SessionJobs, *values: Any) -> Iterator[Update]:
        """Default tab: the completion of the prompt box goes into the output box."""
        prompt = prompt or ""
        yield from self._complete(
            jobs, DEFAULT, prompt, values, lambda text: text, lambda text: self.default_counts(prompt, text)
        )

    def default_continue(self, prompt: str, output: str, jobs: SessionJobs, *values: Any) -> Iterator[Update]:
        """Default tab, Continue: complete prompt + output further; the new text is appended to the output."""
        prompt, output = prompt or "", output or ""
        yield from self._complete(
            jobs,
            DEFAULT,
            prompt + output,
            values,
            lambda text: output + text,
            lambda text: self.default_counts(prompt, output + text),
        )

    # -- Notebook tab -----------------------------------------------------------------------------------

    def notebook_counts(self, text: str) -> str:
        return self._count("Text", text or "")

    def notebook(self, text: str, jobs: SessionJobs, *values: Any) -> Iterator[tuple[Any, ...]]:
        """Notebook tab: the completion is appended to the one text box; the text before it is kept for Undo.

        Yields (text box, status, token count, undo state).
        """
        start = text or ""
        first = True
        for update in self._complete(
            jobs,
            NOTEBOOK,
            start,
            values,
            lambda generated: start + generated,
            lambda generated: self.notebook_counts(start + generated),
        ):
            started = first and update[1] == GENERATING
            first = False
            yield (*update, start if started else gr.skip())

    def notebook_undo(self, before: str | None, jobs: SessionJobs) -> tuple[Any, ...]:
        """Undo: the text as it was before the last Generate (a generation in progress is stopped).

        Returns (text box, status, token count, undo state).
        """
        if before is None:
            gr.Warning("Nothing to undo.")
            return gr.skip(), "⚠️ Nothing to undo.", gr.skip(), gr.skip()
        jobs.discard(NOTEBOOK)
        return before, "Restored the text from before the last Generate.", self.notebook_counts(before), None

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
        """Prompt box -> output box."""
        with gr.Row():
            with gr.Column():
                self.prompt = gr.Textbox(label="Prompt", lines=20, max_lines=40, elem_id="default-input")
            with gr.Column():
                self.output = gr.Textbox(
                    label="Output", lines=20, max_lines=40, buttons=["copy"], elem_id="default-output"
                )
        with gr.Row():
            self.default_generate = gr.Button("Generate", variant="primary", elem_id="default-generate")
            self.default_continue = gr.Button("Continue", elem_id="default-continue")
            self.default_stop = gr.Button("Stop", variant="stop", elem_id="default-stop")
        with gr.Row(equal_height=True):
            self.default_status = gr.Markdown(elem_id="default-status")
            self.default_tokens = gr.Markdown(elem_id="default-tokens")

    def build_notebook(self) -> None:
        """One box; the completion is appended to it."""
        self.notebook = gr.Textbox(label="Notebook", lines=24, max_lines=60, elem_id="notebook-text")
        self.notebook_before = gr.State(None)  # the text before the last Generate, for Undo
        with gr.Row():
            self.notebook_generate = gr.Button("Generate", variant="primary", elem_id="notebook-generate")
            self.notebook_undo = gr.Button("Undo", elem_id="notebook-undo")
            self.notebook_stop = gr.Button("Stop", variant="stop", elem_id="notebook-stop")
        with gr.Row(equal_height=True):
            self.notebook_status = gr.Markdown(elem_id="notebook-status")
            self.notebook_tokens = gr.Markdown(elem_id="notebook-tokens")

    def wire(self, jobs: gr.State) -> list[Any]:
        """Connect both tabs' buttons; returns the generation events."""
        h = self.handlers
        params = self.params.components
        stream: dict[str, Any] = {"show_progress": "minimal", "concurrency_limit": None}
        quiet: dict[str, Any] = {"show_progress": "hidden", "trigger_mode": "always_last"}
        default_outputs = [self.output, self.default_status, self.default_tokens]
        notebook_outputs = [self.notebook, self.notebook_status, self.notebook_tokens, self.notebook_before]
        events = [
            self.default_generate.click(
                h.default, inputs=[self.prompt, jobs, *params], outputs=default_outputs, **stream
            ),
            self.default_continue.click(
                h.default_continue,
                inputs=[self.prompt, self.output, jobs, *params],
                outputs=default_outputs,
                **stream,
            ),
            self.notebook_generate.click(
                h.notebook, inputs=[self.notebook, jobs, *params], outputs=notebook_outputs, **stream
            ),
        ]
        self.notebook_undo.click(
            h.notebook_undo,
            inputs=[self.notebook_before, jobs],
            outputs=notebook_outputs,
            show_progress="hidden",
        )
        self.default_stop.click(
            h.stop_default, inputs=[jobs], outputs=None, queue=False, show_progress="hidden"
        )
        self.notebook_stop.click(
            h.stop_notebook, inputs=[jobs], outputs=None, queue=False, show_progress="hidden"
        )
        # Token counts follow the text: as the prompt changes (typed or sent from the Chat tab) and as the
        # notebook is typed in (its streamed updates are counted once, at the end).
        self.prompt.change(h.default_counts, inputs=[self.prompt], outputs=[self.default_tokens], **quiet)
        self.notebook.input(
            h.notebook_counts, inputs=[self.notebook], outputs=[self.notebook_tokens], **quiet
        )
        return events

    def refresh(self) -> list[Any]:
        """Page load: the token counts of whatever the boxes hold (empty on a fresh page)."""
        return [self.handlers.default_counts(""), self.handlers.notebook_counts("")]

    @property
    def refresh_outputs(self) -> list[gr.components.Component]:
        return [self.default_tokens, self.notebook_tokens]
