"""What each CLI subcommand does, in terms of the core Service."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from webui.app import build_characters, build_service
from webui.cli import CliError, params_from_args
from webui.config import AppConfig
from webui.core.characters.store import CharacterError
from webui.core.engine import EngineError
from webui.core.loader import LoaderError
from webui.core.params import GenerationParams
from webui.core.presets import PresetError
from webui.core.prompts import ChatMessage
from webui.core.service import ChatSettings, LoadReport, Service
from webui.core.settings import SETTINGS_FILE, load_settings
from webui.core.templates.store import TemplateError
from webui.provision import DEFAULT_MODEL_FILE, ProvisionError, provision_default_model

if TYPE_CHECKING:
    from webui.core.hub.catalog import CatalogEntry, CatalogRow
    from webui.core.hub.download import RepoListing

USER_ERRORS = (EngineError, PresetError, TemplateError, ProvisionError, OSError)


def pick_model_name(config: AppConfig, service: Service) -> str:
    """The model the user named, else the default model, else the first one found.

    For a loader whose models are not files (remote) no name means "the first model the server lists".
    """
    if config.model:
        return config.model
    if config.loader and not _loader_needs_files(service, config.loader):
        return ""
    names = [entry.name for entry in service.models()]
    if DEFAULT_MODEL_FILE in names:
        return DEFAULT_MODEL_FILE
    if names:
        return names[0]
    raise CliError(
        f"No model found in {config.models_dir}. Run ./start.sh (it provisions the default model) "
        "or put a .gguf file there."
    )


def _loader_needs_files(service: Service, loader: str) -> bool:
    try:
        return service.engine.registry.get(loader).capabilities.needs_files
    except LoaderError as exc:
        raise CliError(str(exc)) from exc


def _load(
    config: AppConfig, service: Service, template: str | None = None, *, force: bool = False
) -> LoadReport:
    try:
        return service.load_model(
            pick_model_name(config, service), config.loader, config.loader_settings, template, insist=force
        )
    except USER_ERRORS as exc:
        raise CliError(str(exc)) from exc


def _params(service: Service, args: argparse.Namespace) -> GenerationParams:
    """The chosen preset with the sampler flags applied."""
    try:
        return params_from_args(args, service.presets.load(args.preset).params)
    except PresetError as exc:
        raise CliError(str(exc)) from exc


def _load_for_serve(config: AppConfig, service: Service, *, force: bool = False) -> LoadReport:
    """--model if given; else the model the page last loaded (settings.yaml); else the default model.

    A stale settings file (model deleted, settings no longer valid) never stops the server: it says so and
    loads the default instead.
    """
    if not config.model:
        saved = load_settings(config.user_data_dir / SETTINGS_FILE)
        for warning in saved.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if saved.model and (
            saved.model in {entry.name for entry in service.models()}
            or not service.engine.uses_files(saved.model, saved.loader)
        ):
            try:
                return service.load_model(
                    saved.model, saved.loader, saved.loader_settings, saved.template, insist=force
                )
            except USER_ERRORS as exc:
                print(
                    f"warning: the last model could not be loaded again ({exc}); loading the default.",
                    file=sys.stderr,
                )
    return _load(config, service, force=force)


def generate(config: AppConfig, args: argparse.Namespace) -> int:
    service = build_service(config)
    try:
        params = _params(service, args)
        _load(config, service, force=args.force)
        job = service.stream_completion(args.prompt, params)
        try:
            if args.stream:
                for chunk in job:
                    sys.stdout.write(chunk.text)
                    sys.stdout.flush()
                sys.stdout.write("\n")
            else:
                print(job.text())
        except EngineError as exc:
            raise CliError(str(exc)) from exc
        for warning in job.warnings:  # the enabled extensions' errors (the text above is complete)
            print(f"warning: {warning}", file=sys.stderr)
        return 0
    finally:
        service.close()


def chat(config: AppConfig, args: argparse.Namespace) -> int:
    service = build_service(config)
    try:
        params = _params(service, args)
        report = _load(config, service, args.template, force=args.force)
        print(report.message, file=sys.stderr)
        print("Type a message and press Enter. /reset starts over, /exit (or Ctrl-D) quits.", file=sys.stderr)
        settings = ChatSettings(mode="instruct", template=args.template, system_message=args.system)
        history: list[ChatMessage] = []
        while True:
            try:
                line = input("You: ")
            except EOFError:
                print(file=sys.stderr)
                return 0
            text = line.strip()
            if text in ("/exit", "/quit"):
                return 0
            if text == "/reset":
                history.clear()
                continue
            if not text:
                continue
            history.append(ChatMessage("user", text))
            sys.stdout.write("Assistant: ")
            reply = []
            reasoning = []
            try:
                stream = service.stream_chat_reply(history, settings, params)
                try:
                    for chunk in stream:
                        if chunk.reasoning:
                            # A thinking model's reasoning goes to stderr: shown, kept apart from the answer.
                            reasoning.append(chunk.reasoning)
                            sys.stderr.write(chunk.reasoning)
                            sys.stderr.flush()
                        if chunk.text and reasoning and not any(reply):
                            sys.stderr.write("\n")
                        if chunk.text:
                            reply.append(chunk.text)
                        sys.stdout.write(chunk.text)
                        sys.stdout.flush()
                except KeyboardInterrupt:
                    stream.cancel()
            except EngineError as exc:
                history.pop()
                print(f"\nerror: {exc}", file=sys.stderr)
                continue
            sys.stdout.write("\n")
            history.append(ChatMessage("assistant", "".join(reply).strip(), reasoning="".join(reasoning)))
    finally:
        service.close()


def list_models(config: AppConfig) -> int:
    service = build_service(config)
    try:
        entries = service.models()
        if not entries:
            print(f"No models in {config.models_dir}.")
            return 0
        from webui.core.embeddings import is_embedding_entry
        from webui.core.models.capabilities import entry_capabilities
        from webui.core.models.discovery import infer_loader

        width = max(len(e.name) for e in entries)
        for entry in entries:
            size = f"{entry.size_bytes / 1e6:,.0f} MB"
            # thinking,tools,vision as the model's own template and files say ("?": no template to read)
            abilities = "embedding" if is_embedding_entry(entry) else entry_capabilities(entry).summary
            print(f"{entry.name:<{width}}  {size:>10}  {abilities:<21}  {infer_loader(entry)}")
        return 0
    finally:
        service.close()


def inspect_model(config: AppConfig, args: argparse.Namespace) -> int:
    """``webui models inspect NAME``: facts, estimates and the fit verdict as JSON."""
    import json

    from webui.app import build_templates
    from webui.core.hardware.fit import model_report
    from webui.core.hardware.machine import MachineProbe
    from webui.core.models.discovery import ModelFileError, ModelNotFoundError, find_model, model_metadata
    from webui.core.templates.store import detect_template

    if args.n_ctx is not None and args.n_ctx < 0:
        raise CliError("--n-ctx must be 0 (automatic) or more.")
    try:
        entry = find_model(config.models_dir, args.model)
        report = model_report(entry, MachineProbe(), n_ctx=args.n_ctx or None, n_gpu_layers=args.n_gpu_layers)
        metadata = model_metadata(entry)
        detection = detect_template(
            build_templates(config), model_name=entry.name, metadata_template=metadata.chat_template
        )
    except (ModelNotFoundError, ModelFileError, TemplateError, OSError) as exc:
        raise CliError(str(exc)) from exc
    report["template"] = {
        "name": detection.template.name,
        "source": detection.reason,
        "message": detection.message(),
    }
    print(json.dumps(report, indent=2, default=str))
    return 0


def provision(config: AppConfig) -> int:
    try:
        provision_default_model(config.models_dir)
    except ProvisionError as exc:
        raise CliError(str(exc)) from exc
    return 0


def bench(config: AppConfig, args: argparse.Namespace) -> int:
    """``webui bench``: raw backend vs Palabre, interleaved, printed as a table or JSON (webui/benchmarks/)."""
    from webui.benchmarks.runner import bench_command

    if not args.model:
        provision(config)  # the default model, placed the way start.sh does
    return bench_command(args, config.models_dir, sys.stderr)


def serve(config: AppConfig, *, force: bool = False) -> int:
    from webui.api.auth import exposure_problem
    from webui.server import run_server  # gradio is imported only here

    problem = exposure_problem(config)
    if problem:
        raise CliError(problem)  # before loading anything: an exposed server must not start unprotected
    service = build_service(config)
    try:
        if config.autoload_default_model:
            report = _load_for_serve(config, service, force=force)
            print(report.message, flush=True)
        if config.embedding_model:
            _load_embedding_model(service, config.embedding_model)
        return run_server(service, config)
    finally:
        service.close()


def _load_embedding_model(service: Service, name: str) -> None:
    """``--embedding-model``: load it now, so that a wrong name is said at start."""
    from webui.core.embeddings import EmbeddingError

    try:
        seconds = service.embeddings.load(name)
    except EmbeddingError as exc:
        raise CliError(str(exc)) from exc
    print(f"Embedding model {name} loaded in {seconds:.1f} s.", flush=True)


def list_extensions(config: AppConfig) -> int:
    """``webui extensions list``: every extension found, enabled or not, broken ones with their error."""
    from webui.app import build_extensions

    manager, _ = build_extensions(config)
    for info in manager.info():
        state = "enabled" if info.enabled else "disabled"
        print(f"{info.name}  ({info.source}, {state})  {info.description}")
        if info.error is not None:
            print(f"    error: {info.error}")
        else:
            print(f"    hooks: {', '.join(info.hooks) or 'none'}")
    manager.close()
    return 0


def characters(config: AppConfig, args: argparse.Namespace) -> int:
    """``webui characters list | import FILE | export NAME --format F``."""
    store = build_characters(config)
    try:
        if args.characters_command == "list":
            for name in store.names():
                if store.is_user_character(name):
                    origin = "yours, overrides the bundled one" if store.is_bundled(name) else "yours"
                else:
                    origin = "bundled"
                print(f"{name}  ({origin})")
            return 0
        if args.characters_command == "import":
            result = store.import_with_notes(args.file, name=args.name, overwrite=args.overwrite)
            print(f'Imported "{result.character.name}" into {result.path}')
            for note in result.notes:
                print(f"note: {note}", file=sys.stderr)
            return 0
        print(store.export(args.name, args.format, args.output))
        return 0
    except CharacterError as exc:
        raise CliError(str(exc)) from exc


def hub(config: AppConfig, args: argparse.Namespace) -> int:
    """``webui models files REPO`` and ``webui models download REPO [--file F ...]`` (Hugging Face Hub)."""
    from webui.core.hub import download as dl

    try:
        listing = dl.list_files(args.repo, args.revision, args.token)
        if args.models_command == "files":
            _print_listing(listing)
            return 0
        progress = _TerminalProgress()
        try:
            result = dl.download(
                listing.ref,
                args.files,
                models_dir=config.models_dir,
                token=args.token,
                progress=progress,
                listing=listing,
            )
        except KeyboardInterrupt:
            print("\nInterrupted: run the same command again to resume.", file=sys.stderr)
            return 130
        finally:
            progress.end()
        print(result.message)
        return 0
    except dl.DownloadError as exc:
        raise CliError(str(exc)) from exc


def catalog(config: AppConfig, args: argparse.Namespace) -> int:
    """``webui models catalog``: the curated models with capabilities and a fit verdict; ``--download`` one."""
    from webui.core.hardware.machine import MachineProbe
    from webui.core.hub import catalog as cat
    from webui.core.hub import download as dl

    machine = MachineProbe().facts(measure_speed=False)
    try:
        entries = list(cat.catalog_entries())
        if args.refresh and not args.download:  # a download reads its own entry's listing
            refreshed, problems = cat.refresh_all(entries, args.token)
            entries = list(refreshed)
            for problem in problems:
                print(f"warning: {problem}", file=sys.stderr)
        rows = cat.catalog_rows(machine, config.models_dir, entries)
        if not args.download:
            _print_catalog(rows)
            return 0
        entry = cat.find_entry(args.download, entries)
        quant = args.quant or _best_quant(rows, entry)
        progress = _TerminalProgress()
        try:
            result = cat.download_entry(
                entry, quant, models_dir=config.models_dir, token=args.token, progress=progress
            )
        except KeyboardInterrupt:
            print("\nInterrupted: run the same command again to resume.", file=sys.stderr)
            return 130
        finally:
            progress.end()
        print(result.message)
        file = entry.file(quant)
        if file is not None:
            print(f"Load it as {cat.local_model_name(entry, file)} (Model tab, or --model).")
        return 0
    except dl.DownloadError as exc:
        raise CliError(str(exc)) from exc


def _best_quant(rows: list[CatalogRow], entry: CatalogEntry) -> str:
    """The largest quantization of ``entry`` that fits (else the smallest)."""
    own = [row for row in rows if row.entry.repo_id == entry.repo_id]
    fitting = [row for row in own if row.verdict == "fits"]
    pick = max(fitting, key=lambda r: r.file.size) if fitting else min(own, key=lambda r: r.file.size)
    return pick.file.quant


def _print_catalog(rows: list[CatalogRow]) -> None:
    from webui.core.hub.refs import format_size

    headers = (
        "Model",
        "Params",
        "Quant",
        "Size",
        "Capabilities",
        "Context",
        "Licence",
        "Fit here",
        "Repository",
    )
    table = [
        (
            row.entry.name + (" (downloaded)" if row.downloaded else ""),
            row.entry.parameters_label,
            row.file.quant,
            format_size(row.download_size),
            ",".join(row.entry.labels) or "-",
            f"{row.entry.context_length // 1024}K",
            row.entry.licence,
            row.verdict,
            row.entry.repo_id,
        )
        for row in rows
    ]
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(headers)]
    for line in (headers, *table):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    print("Download one: webui models catalog --download MODEL [--quant Q4_K_M]")


def _print_listing(listing: RepoListing) -> None:
    from webui.core.hub.refs import format_size

    print(f"{listing.ref.label}: {listing.kind} repository, {len(listing.files)} files")
    width = max(len(f.path) for f in listing.files)
    for f in listing.files:
        print(f"  {f.path:<{width}}  {format_size(f.size):>10}  {f.quant or '':<8}  {f.sha256 or ''}")
    if listing.choices:
        print("Choices (use --file with a file name):")
        for choice in listing.choices:
            fit = f"  {choice.fit.verdict}: {choice.fit.message}" if choice.fit else ""
            print(f"  {choice.label}  {format_size(choice.size)}  {choice.quant or ''}{fit}")


class _TerminalProgress:
    """One self-rewriting progress line on stderr (at most a few updates a second)."""

    def __init__(self) -> None:
        self.shown = 0.0
        self.started = 0.0
        self.drawn = False

    def __call__(self, done: int, total: int, name: str) -> None:
        import time

        from webui.core.hub.refs import format_size

        now = time.monotonic()
        self.started = self.started or now
        if now - self.shown < 0.25 and done < total:
            return
        self.shown = now
        percent = 100 * done / total if total else 100
        sys.stderr.write(f"\r{name}: {percent:5.1f}%  {format_size(done)} / {format_size(total)}   ")
        sys.stderr.flush()
        self.drawn = True

    def end(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")
