"""``webui bench``: run the selected sections against one model and collect every figure into a Report.

The raw backend and Palabre run in the same invocation, interleaved (A B A B ...) after a warm-up; figures are
medians and every ratio compares two things measured in the same run, so a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webui.benchmarks.figures import Figure, Report, table

SECTIONS = ("llama", "turns", "queue", "parallel", "speculative", "page", "startup", "memory", "transformers")
SECTION_HELP = {
    "llama": "raw llama_cpp vs engine vs streaming API: generation, prompt, first token",
    "turns": "time to first token at turns 1, 10, 25, 50 of a growing chat",
    "queue": "8 concurrent API clients vs one",
    "parallel": "1, 2, 4, 8 concurrent API clients on parallel slots vs one client sending them in turn "
    "(and vs llama-server -np N, and one stream vs llama-server, with --llama-server PATH)",
    "speculative": "prompt-lookup drafting vs raw llama-cpp-python on an edit-this-code and a free-writing task",
    "page": "the page in Chromium: Send to first visible token, tokens/s seen vs the API",
    "startup": "import webui.core; webui serve until the page answers",
    "memory": "peak RSS of serve vs a raw llama_cpp process",
    "transformers": "Palabre vs raw model.generate on a Transformers folder",
}
N_CTX = 2048


@dataclass
class BenchOptions:
    """What to run and how hard."""

    model: Path
    sections: tuple[str, ...] = SECTIONS
    rounds: int = 5
    tokens: int = 128
    threads: int = 0  # 0 = Palabre's automatic value; always the same for raw and Palabre
    conversations: int = 2
    turns: int = 50
    clients: int = 8
    page_rounds: int = 3
    hf_model: Path | None = None
    llama_server: Path | None = None  # llama.cpp's C++ server, for the parallel section's comparison
    workdir: Path | None = None
    progress: Callable[[str], None] = field(default=lambda message: None)


def _threads(options: BenchOptions) -> tuple[int, int]:
    from loaders.llama_cpp import automatic_batch_threads, automatic_threads

    if options.threads:
        return options.threads, options.threads
    return automatic_threads(), automatic_batch_threads()


def _link_model(user_data: Path, model: Path) -> None:
    models = user_data / "models"
    models.mkdir(parents=True, exist_ok=True)
    link = models / model.name
    if not link.exists():
        link.symlink_to(model.resolve())


def _default_hf_model() -> Path | None:
    """The tiny Transformers folder the tests build (cached), when running from a checkout."""
    import importlib.util

    from webui.config import PROJECT_ROOT

    # Loaded by path: the `webui` console script does not put the checkout on sys.path.
    source = PROJECT_ROOT / "tests" / "support" / "tiny_models.py"
    spec = importlib.util.spec_from_file_location("palabre_bench_tiny_models", source)
    if not source.is_file() or spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return Path(module.ensure_tiny_models().llama)


def run_bench(options: BenchOptions) -> Report:
    """Run every selected section; a section that fails is reported in ``errors`` and the rest still run."""
    unknown = set(options.sections) - set(SECTIONS)
    if unknown:
        raise ValueError(
            f"Unknown section(s): {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}."
        )
    if not options.model.is_file():
        raise ValueError(f"{options.model} is not a GGUF file.")
    threads, batch_threads = _threads(options)
    report = Report(
        settings={
            "model": options.model.name,
            "threads": threads,
            "batch_threads": batch_threads,
            "n_ctx": N_CTX,
            "rounds": options.rounds,
            "tokens": options.tokens,
            "sections": list(options.sections),
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        }
    )
    with tempfile.TemporaryDirectory(prefix="palabre-bench-", dir=options.workdir) as tmp:
        workdir = Path(tmp)
        _run_sections(options, report, workdir, threads, batch_threads)
    return report


def _section(
    report: Report, name: str, options: BenchOptions, fn: Callable[[], tuple[list[Figure], Any]]
) -> None:
    options.progress(f"{name}: {SECTION_HELP[name]} ...")
    started = time.perf_counter()
    try:
        figures, details = fn()
    except Exception as exc:  # one broken section must not hide the others' figures
        report.errors[name] = f"{type(exc).__name__}: {exc}"
        report.details[name] = {"traceback": traceback.format_exc()[-3000:]}
        options.progress(f"{name}: failed: {exc}")
        return
    report.figures += figures
    report.details[name] = {**(details or {}), "seconds": round(time.perf_counter() - started, 1)}
    options.progress(f"{name}: done in {time.perf_counter() - started:.0f} s")


def _run_sections(
    options: BenchOptions, report: Report, workdir: Path, threads: int, batch_threads: int
) -> None:
    from loaders.llama_cpp import automatic_batch_threads
    from webui.benchmarks import chat, llama, startup
    from webui.benchmarks.server import ServeProcess

    selected = set(options.sections)
    if "startup" in selected:
        _section(
            report, "startup", options, lambda: _merge(startup.import_time(), startup.serve_time(workdir))
        )
    needs_server = selected & {"llama", "turns", "queue", "page", "memory"}
    server: ServeProcess | None = None
    service: Any = None
    try:
        if needs_server:
            user_data = workdir / "serve" / "user_data"
            _link_model(user_data, options.model)
            # One slot: these sections compare with one raw llama_cpp context (the parallel section has its own).
            settings = [
                f"n_ctx={N_CTX}",
                f"n_threads={threads}",
                f"n_threads_batch={batch_threads}",
                "parallel=1",
            ]
            args = ["--model", options.model.name]
            for setting in settings:
                args += ["--setting", setting]
            server = ServeProcess(user_data, args, workdir / "serve.log")
            options.progress("starting webui serve with the model ...")
            server.start()
            _warm(server)
            report.details["serve_peak_rss_mb_after_first_reply"] = server.peak_rss_mb()
        if "memory" in selected and server is not None:
            peak = report.details["serve_peak_rss_mb_after_first_reply"]
            _section(
                report,
                "memory",
                options,
                lambda: startup.memory(peak, options.model, N_CTX, threads, batch_threads),
            )
        if "llama" in selected:
            service = _engine_service(workdir, options.model, threads, batch_threads)
            setup = llama.LlamaSetup(options.model, threads, batch_threads, options.tokens, options.rounds)
            _section(report, "llama", options, lambda: llama.compare(setup, service, server))
            service.close()
            service = None
        if "turns" in selected and server is not None:
            _section(
                report,
                "turns",
                options,
                lambda: chat.multi_turn(
                    server,
                    conversations=options.conversations,
                    turns=options.turns,
                    raw=lambda cached: chat.raw_context_growth(
                        options.model, threads, batch_threads, cached, N_CTX
                    ),
                ),
            )
        if "queue" in selected and server is not None:
            _section(report, "queue", options, lambda: chat.queue(server, clients=options.clients))
        if "parallel" in selected:
            from webui.benchmarks import parallel

            user_data = workdir / "parallel" / "user_data"
            _link_model(user_data, options.model)
            slot_settings = [f"n_ctx={N_CTX}", f"n_threads={threads}", f"n_threads_batch={batch_threads}"]
            _section(
                report,
                "parallel",
                options,
                lambda: parallel.compare(
                    user_data,
                    options.model,
                    slot_settings,
                    workdir / "parallel.log",
                    tokens=options.tokens,
                    rounds=options.rounds,
                    llama_server=options.llama_server,
                    n_ctx=N_CTX,
                    threads=(threads, batch_threads),
                    every_core=automatic_batch_threads(),
                ),
            )
        if "speculative" in selected:
            from webui.benchmarks import speculative

            user_data = workdir / "speculative" / "user_data"
            _link_model(user_data, options.model)
            setup = llama.LlamaSetup(options.model, threads, batch_threads, options.tokens, options.rounds)
            _section(
                report,
                "speculative",
                options,
                lambda: speculative.compare(
                    setup,
                    user_data,
                    [
                        f"n_ctx={N_CTX}",
                        f"n_threads={threads}",
                        f"n_threads_batch={batch_threads}",
                        "parallel=1",
                    ],
                    workdir / "speculative.log",
                ),
            )
        if "page" in selected and server is not None:
            from webui.benchmarks import browser

            _section(
                report,
                "page",
                options,
                lambda: browser.page_vs_api(
                    server, tokens=min(options.tokens, 96), rounds=options.page_rounds
                ),
            )
    finally:
        if service is not None:
            service.close()
        if server is not None:
            server.stop()
    if "transformers" in selected:

        def transformers_section() -> tuple[list[Figure], Any]:
            from webui.benchmarks import hf

            folder = options.hf_model or _default_hf_model()
            if folder is None:
                raise RuntimeError("no Transformers folder: pass --hf-model FOLDER")
            return hf.compare(folder, threads=threads, tokens=min(options.tokens, 64), rounds=options.rounds)

        _section(report, "transformers", options, transformers_section)


def _merge(*parts: tuple[list[Figure], Any]) -> tuple[list[Figure], dict[str, Any]]:
    figures: list[Figure] = []
    details: dict[str, Any] = {}
    for part_figures, part_details in parts:
        figures += part_figures
        details.update(part_details or {})
    return figures, details


def _warm(server: Any) -> None:
    """One short reply, so the first measured request pays no first-call costs."""
    import httpx

    from webui.benchmarks.server import stream_timed

    with httpx.Client(timeout=600) as client:
        stream_timed(client, f"{server.url}/v1/completions", {"prompt": "Hello", "max_tokens": 8})


def _engine_service(workdir: Path, model: Path, threads: int, batch_threads: int) -> Any:
    """A Service in this process with the model loaded the way ``serve`` loads it."""
    from webui.app import build_service
    from webui.config import AppConfig

    user_data = workdir / "engine" / "user_data"
    _link_model(user_data, model)
    service = build_service(AppConfig(user_data_dir=user_data))
    service.load_model(
        model.name,
        settings={"n_ctx": N_CTX, "n_threads": threads, "n_threads_batch": batch_threads, "parallel": 1},
    )
    return service


# -- command line ------------------------------------------------------------------------------------------


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """``webui bench``'s flags (also used by ``python -m webui.benchmarks``)."""
    parser.add_argument(
        "--model", help="GGUF file name in user_data/models, or a path (default: the default model)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--rounds", type=_positive, default=5, help="interleaved rounds per comparison (default 5)"
    )
    parser.add_argument(
        "--tokens", type=_positive, default=128, help="tokens generated per run (default 128)"
    )
    parser.add_argument(
        "--threads",
        type=_positive,
        default=None,
        help="llama.cpp threads for raw and Palabre alike (default: Palabre's automatic value)",
    )
    parser.add_argument(
        "--section",
        action="append",
        choices=SECTIONS,
        dest="sections",
        help="run only this section (repeatable); default: all. "
        + "; ".join(f"{k}: {v}" for k, v in SECTION_HELP.items()),
    )
    parser.add_argument("--skip", action="append", choices=SECTIONS, default=[], help="leave a section out")
    parser.add_argument("--skip-browser", action="store_true", help="same as --skip page")
    parser.add_argument("--turns", type=_positive, default=50, help="turns of the growing chat (default 50)")
    parser.add_argument("--conversations", type=_positive, default=2, help="chats per turns run (default 2)")
    parser.add_argument(
        "--hf-model", type=Path, default=None, help="Transformers folder (default: the test tiny model)"
    )
    parser.add_argument(
        "--user-data-dir", type=Path, default=None, help="folder holding models/ (default user_data)"
    )
    parser.add_argument(
        "--llama-server",
        type=Path,
        default=None,
        help="llama.cpp's llama-server binary: the parallel section also measures it on the same requests",
    )


def _binary(path: Path | None) -> Path | None:
    """The --llama-server binary, checked before any section runs."""
    if path is None:
        return None
    path = path.expanduser()
    if not path.is_file():
        raise ValueError(f"--llama-server {path}: no such file (build it with build-llama-cpp-tools.sh).")
    return path


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def options_from_args(
    args: argparse.Namespace, models_dir: Path, progress: Callable[[str], None]
) -> BenchOptions:
    from webui.provision import DEFAULT_MODEL_FILE

    name = args.model or DEFAULT_MODEL_FILE
    candidate = Path(name).expanduser()
    model = candidate if candidate.is_file() else models_dir / name
    if not model.is_file():
        raise ValueError(f"No GGUF file {name!r} (looked in {models_dir}).")
    skipped = set(args.skip) | ({"page"} if args.skip_browser else set())
    sections = tuple(s for s in (args.sections or SECTIONS) if s not in skipped)
    return BenchOptions(
        model=model,
        sections=sections,
        rounds=args.rounds,
        tokens=args.tokens,
        threads=args.threads or 0,
        conversations=args.conversations,
        turns=args.turns,
        hf_model=args.hf_model,
        llama_server=_binary(args.llama_server),
        progress=progress,
    )


def print_report(report: Report, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
        return
    s = report.settings
    print(
        f"model {s['model']}, {s['threads']} generation / {s['batch_threads']} prompt thread(s) for raw and "
        f"Palabre alike, n_ctx {s['n_ctx']}, {s['rounds']} interleaved rounds, {s['tokens']} tokens, medians"
    )
    print()
    print(table(report))
    summary = report.as_dict()
    print()
    print(f"targets met: {summary['targets_met']} of {summary['targets_total']}")


def main(argv: Sequence[str] | None = None) -> int:
    import sys

    from webui.config import default_user_data_dir

    parser = argparse.ArgumentParser(
        prog="webui bench", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    add_bench_arguments(parser)
    args = parser.parse_args(argv)
    return bench_command(args, (args.user_data_dir or default_user_data_dir()) / "models", sys.stderr)


def bench_command(args: argparse.Namespace, models_dir: Path, log: Any) -> int:
    """Run ``webui bench`` with parsed ``args``; progress goes to ``log``, the report to stdout."""

    def progress(message: str) -> None:
        print(message, file=log, flush=True)

    try:
        options = options_from_args(args, models_dir, progress)
        report = run_bench(options)
    except ValueError as exc:
        print(f"error: {exc}", file=log)
        return 2
    print_report(report, as_json=args.json)
    return 1 if report.errors else 0
