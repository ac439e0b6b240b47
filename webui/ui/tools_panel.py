"""The Chat tab's Tools panel and approval prompt.

The panel switches tool use on for the chat (off by default), picks the built-in tools and the MCP servers'
tools (from user_data/mcp.json only), the folders the file tool may read and whether API clients may use the
page's tools; the choices are saved in user_data/tools.yaml. The approval prompt shows under the chat while
a call that is not read-only waits: Approve, Always for this tool (this session), Reject.
"""

from __future__ import annotations

import threading
from typing import Any

import gradio as gr

from webui.core.agent import ApprovalGate, Toolbox, ToolSession
from webui.core.agent.loop import Decision
from webui.core.characters.store import Character
from webui.core.chats.agent_reply import step_record
from webui.ui.tool_steps import approval_text

BUILTIN_LABELS = {
    "calculator": "Calculator",
    "current_datetime": "Current date and time",
    "read_file": "Read a text file (allowed folders only)",
    "fetch_page": "Fetch a web page (public addresses only)",
}


class ToolsPanel:
    """The Tools accordion, the approval row, and the ToolSession a reply gets from them."""

    def __init__(self, toolbox: Toolbox | None) -> None:
        self.toolbox = toolbox
        self._started = threading.Event()

    # -- the MCP servers -----------------------------------------------------------------------------------

    def start_servers(self) -> None:
        """Start the servers of mcp.json (in the background: a slow server must not hold the page back)."""
        if self.toolbox is None:
            return
        box = self.toolbox

        def start() -> None:
            try:
                box.start_servers()
            finally:
                self._started.set()

        threading.Thread(target=start, name="palabre-mcp-start", daemon=True).start()

    # -- drawing -------------------------------------------------------------------------------------------

    def build(self) -> None:
        with gr.Accordion("Tools", open=False, elem_id="chat-tools"):
            self.use = gr.Checkbox(
                label="Let the model use tools in this chat",
                value=False,
                elem_id="chat-tools-use",
                info="Tools that are not read-only ask you first; at most 8 rounds of calls per reply.",
            )
            self.builtin = gr.CheckboxGroup(
                [(label, name) for name, label in BUILTIN_LABELS.items()],
                label="Built-in tools",
                elem_id="chat-tools-builtin",
            )
            self.folders = gr.Textbox(
                label="Folders the file tool may read (one per line)",
                lines=2,
                elem_id="chat-tools-folders",
            )
            self.mcp = gr.CheckboxGroup(
                [], label="MCP servers' tools (user_data/mcp.json)", elem_id="chat-tools-mcp"
            )
            with gr.Row(equal_height=True):
                self.servers = gr.Markdown(elem_id="chat-tools-servers")
                self.reload = gr.Button(
                    "Reload mcp.json", size="sm", scale=0, elem_id="chat-tools-reload", min_width=140
                )
            self.api = gr.Checkbox(
                label="API clients may use these tools too",
                value=False,
                elem_id="chat-tools-api",
                info=(
                    "Off by default. When on, API chat requests get the enabled tools that need no approval "
                    "(read-only ones; others only if listed under api_allowed in user_data/tools.yaml) and "
                    "Palabre runs their calls."
                ),
            )
            self.status = gr.Markdown(elem_id="chat-tools-status")

    def build_approval(self) -> None:
        with gr.Column(visible=False, elem_id="chat-approval") as self.approval:
            self.approval_md = gr.Markdown(elem_id="chat-approval-text")
            with gr.Row():
                self.approve = gr.Button("Approve", variant="primary", size="sm", elem_id="chat-approve")
                self.always = gr.Button("Always for this tool", size="sm", elem_id="chat-approve-always")
                self.reject = gr.Button("Reject", variant="stop", size="sm", elem_id="chat-reject")

    # -- the panel's values ----------------------------------------------------------------------------

    @property
    def choice_widgets(self) -> list[Any]:
        return [self.use, self.builtin, self.mcp, self.folders, self.api]

    def refresh(self) -> tuple[Any, ...]:
        """The panel as saved, with the MCP servers' tools and status (page load)."""
        box = self.toolbox
        if box is None:
            return (
                False,
                gr.update(interactive=False),
                gr.skip(),
                gr.skip(),
                gr.skip(),
                "No tools in this page.",
            )
        self._started.wait(timeout=60)
        off = set(box.settings.disabled)
        builtin = [name for name in BUILTIN_LABELS if name not in off]
        mcp_tools = [spec for spec in box.specs() if spec.source != "builtin"]
        choices = [
            (f"{spec.name} ({spec.source}{'' if spec.read_only else ', asks first'})", spec.name)
            for spec in mcp_tools
        ]
        mcp = gr.update(choices=choices, value=[spec.name for spec in mcp_tools if spec.name not in off])
        return (
            box.settings.use_in_chat,
            builtin,
            mcp,
            "\n".join(box.settings.allowed_folders),
            box.settings.expose_to_api,
            self.describe(),
        )

    @property
    def refresh_outputs(self) -> list[Any]:
        return [self.use, self.builtin, self.mcp, self.folders, self.api, self.servers]

    def describe(self) -> str:
        box = self.toolbox
        if box is None:
            return ""
        rows = box.server_status()
        if not rows:
            return 'No MCP server: list them in `user_data/mcp.json` (`{"mcpServers": {...}}`).'
        return "\n".join(f"- **{name}**: {status}" for name, status in rows)

    def save(self, use: bool, builtin: list[str], mcp: list[str], folders: str, api: bool) -> str:
        if self.toolbox is None:
            return ""
        lines = [line.strip() for line in (folders or "").splitlines() if line.strip()]
        self.toolbox.update(
            enabled=[*(builtin or []), *(mcp or [])],
            folders=lines,
            expose_to_api=bool(api),
            use_in_chat=bool(use),
        )
        return "Saved."

    # -- a reply's tools -----------------------------------------------------------------------------------

    def session(self, use: bool, gate: Any, character: Character | None) -> ToolSession | None:
        """The tools a reply may use (None: tools are off, or none is enabled); a personality narrows them to
        its list."""
        if not use or self.toolbox is None or not isinstance(gate, ApprovalGate):
            return None
        tools = self.toolbox.enabled(character.tools if character is not None else None)
        if not tools:
            return None
        return ToolSession(tools, gate, on_cancel=gate.cancel)

    # -- approval ------------------------------------------------------------------------------------------

    @staticmethod
    def approval_view(gate: Any) -> tuple[Any, Any]:
        """The approval row's (visibility, text) for what ``gate`` waits on."""
        waiting = gate.waiting if isinstance(gate, ApprovalGate) else None
        if waiting is None:
            return gr.update(visible=False), ""
        return gr.update(visible=True), approval_text(step_record(waiting))

    @staticmethod
    def answer(gate: Any, decision: Decision) -> tuple[Any, Any]:
        if isinstance(gate, ApprovalGate):
            gate.answer(decision)
        return gr.update(visible=False), ""

    def reload_servers(self) -> tuple[Any, ...]:
        """Restart the MCP servers from mcp.json as it is now; the panel shows their tools."""
        if self.toolbox is not None:
            self.toolbox.reload_servers()
        return self.refresh()

    def wire(self, gate: gr.State) -> None:
        quick: dict[str, Any] = {"show_progress": "hidden", "queue": False}
        self.reload.click(self.reload_servers, outputs=self.refresh_outputs, show_progress="minimal")
        for widget in self.choice_widgets:
            widget.input(self.save, inputs=self.choice_widgets, outputs=[self.status], **quick)
        outputs = [self.approval, self.approval_md]
        for button, decision in ((self.approve, "approve"), (self.always, "always"), (self.reject, "reject")):
            button.click(
                lambda g, d=decision: self.answer(g, d),
                inputs=[gate],
                outputs=outputs,
                **quick,
            )
