"""Command line: arguments -> AppConfig -> subcommands (serve, generate, chat, models).

Imports stay light: gradio and the web server are imported only by ``serve``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from webui import knowledge_cli
from webui.config import AppConfig, default_user_data_dir
from webui.core.params import GenerationParams, describe_validation_error, field_specs

EXIT_USAGE = 2


class CliError(Exception):
    """Printed as one clear line, then the command exits non-zero."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_param_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per GenerationParams field, derived from the schema (defaults stay in the schema)."""
    group = parser.add_argument_group("sampler parameters (default: the preset's value)")
    for spec in field_specs():
        help_text = f"{spec.description} (default {spec.default!r})"
        if spec.kind == "float":
            group.add_argument(_flag(spec.name), type=float, default=None, help=help_text, dest=spec.name)
        elif spec.kind == "int":
            group.add_argument(_flag(spec.name), type=int, default=None, help=help_text, dest=spec.name)
        elif spec.kind == "bool":
            group.add_argument(
                _flag(spec.name),
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
                dest=spec.name,
            )
        elif spec.kind == "text":
            group.add_argument(_flag(spec.name), default=None, help=help_text, dest=spec.name)
        elif spec.kind == "list":
            group.add_argument(
                _flag(spec.name),
                action="append",
                default=None,
                help=f"{spec.description} (repeatable)",
                dest=spec.name,
            )
        else:
            group.add_argument(
                _flag(spec.name), default=None, help=f"{spec.description} (JSON)", dest=spec.name
            )


def params_from_args(args: argparse.Namespace, base: GenerationParams) -> GenerationParams:
    """The preset's params with every flag the user gave applied and validated."""
    changes: dict[str, Any] = {}
    for spec in field_specs():
        value = getattr(args, spec.name, None)
        if value is None:
            continue
        if spec.kind == "mapping":
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise CliError(f"{_flag(spec.name)} must be JSON: {exc}") from exc
        changes[spec.name] = value
    try:
        return base.overlay(changes)
    except ValidationError as exc:
        raise CliError(f"Invalid sampler parameters: {describe_validation_error(exc)}") from exc


def _parse_settings(pairs: Sequence[str] | None) -> dict[str, str]:
    settings: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--setting expects KEY=VALUE, got {pair!r}.")
        settings[key.strip()] = value.strip()
    return settings


def _common_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", help="model name in user_data/models (or a path); default: the default model"
    )
    parser.add_argument("--loader", help="loader to use (default: inferred from the model files)")
    parser.add_argument(
        "--setting",
        action="append",
        metavar="KEY=VALUE",
        help="loader setting, e.g. --setting n_ctx=4096 --setting n_threads=2 (repeatable)",
    )
    parser.add_argument("--user-data-dir", type=Path, default=None, help="folder for models, presets, chats")
    parser.add_argument(
        "--force", action="store_true", help="load the model even if it is estimated not to fit in memory"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="webui", description="Palabre: a local web UI for large language models."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the web page")
    _common_model_flags(serve)
    serve.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    serve.add_argument("--no-model", action="store_true", help="start without loading a model")
    serve.add_argument(
        "--idle-unload",
        type=_positive_minutes,
        default=None,
        metavar="MINUTES",
        help="unload the model after MINUTES with no generation (the next API request naming it reloads it)",
    )
    serve.add_argument(
        "--max-queue",
        type=_queue_size,
        default=16,
        metavar="N",
        help="generations that may wait behind the running one (default 16); more get HTTP 429 + Retry-After",
    )
    serve.add_argument(
        "--model-memory-budget",
        type=_memory_size,
        default=None,
        metavar="SIZE",
        help="memory the loaded models may hold together, e.g. 8GiB or 6GB (default: what the fit check says "
        "this machine holds); a model that does not fit beside the others unloads the least recently used",
    )
    serve.add_argument(
        "--max-loaded-models",
        type=_loaded_models,
        default=3,
        metavar="N",
        help="models loaded at once (default 3), as Ollama's OLLAMA_MAX_LOADED_MODELS; 1: one at a time",
    )
    serve.add_argument(
        "--max-upload-mb",
        type=_upload_megabytes,
        default=50.0,
        metavar="MB",
        help="the largest file the page accepts: cards, chat imports (default 50); bigger ones get HTTP 413",
    )
    serve.add_argument(
        "--embedding-model",
        default=None,
        metavar="NAME",
        help="embedding model in user_data/models to load at start (a sentence-transformers folder or a GGUF) "
        "for /v1/embeddings and /api/embed",
    )
    serve.add_argument(
        "--allow-image-host",
        action="append",
        metavar="HOST",
        help="let API requests name images by http(s) URL, fetched by the server from HOST only "
        "(repeatable; *.example.com for its subdomains, * for any host); private, loopback and link-local "
        "addresses are refused whatever the name, with a 15 s timeout and a 20 MiB cap. Default: no image "
        "URLs, only base64 images (data: URLs, Ollama images)",
    )
    serve.add_argument(
        "--extensions",
        nargs="*",
        default=None,
        metavar="NAME",
        help="enable these extensions, in hook order (default: those enabled on the Session tab)",
    )
    _access_flags(serve)

    generate = sub.add_parser("generate", help="complete a prompt and print the result")
    _common_model_flags(generate)
    generate.add_argument("--prompt", required=True, help="the text to continue")
    generate.add_argument("--preset", default="Default", help="preset to start from (default: Default)")
    generate.add_argument("--stream", action="store_true", help="print the text as it is generated")
    add_param_flags(generate)

    chat = sub.add_parser("chat", help="chat in the terminal (instruct mode, with the model's template)")
    _common_model_flags(chat)
    chat.add_argument("--preset", default="Default", help="preset to start from (default: Default)")
    chat.add_argument("--system", default="", help="system message")
    chat.add_argument("--template", default=None, help="instruction template (default: detected)")
    add_param_flags(chat)

    models = sub.add_parser("models", help="list or provision models")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    listing = models_sub.add_parser("list", help="list the models in user_data/models")
    listing.add_argument("--user-data-dir", type=Path, default=None)
    provision = models_sub.add_parser("provision-default", help="place the default model in user_data/models")
    provision.add_argument("--user-data-dir", type=Path, default=None)
    inspect = models_sub.add_parser(
        "inspect", help="print a model's facts, memory and speed estimates and whether it fits (JSON)"
    )
    inspect.add_argument("model", help="model name in user_data/models, or a path to a .gguf file or folder")
    inspect.add_argument("--n-ctx", type=int, default=None, help="context length (default: the loader's)")
    inspect.add_argument("--n-gpu-layers", type=int, default=None, help="layers on the GPU (-1 = all)")
    inspect.add_argument("--user-data-dir", type=Path, default=None)
    _download_parsers(models_sub)
    _catalog_parser(models_sub)
    _characters_parser(sub)
    _bench_parser(sub)
    knowledge_cli.add_knowledge_parser(sub)
    extensions = sub.add_parser("extensions", help="list the extensions (bundled, yours and installed)")
    extensions_sub = extensions.add_subparsers(dest="extensions_command", required=True)
    extensions_list = extensions_sub.add_parser("list", help="name, source, enabled, description and hooks")
    extensions_list.add_argument("--user-data-dir", type=Path, default=None)
    return parser


def _positive_number(what: str, unit: str) -> Callable[[str], float]:
    """An argparse type: a number of ``unit`` above 0 (fractions allowed), refused in words naming ``what``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of {unit}") from None
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"{what} must be a positive number of {unit}")
        return value

    return parse


# ``--idle-unload``'s value: minutes (0.5 = 30 seconds); ``--max-upload-mb``'s: megabytes.
_positive_minutes = _positive_number("the idle time", "minutes")
_upload_megabytes = _positive_number("the upload limit", "megabytes")


def _queue_size(text: str) -> int:
    """``--max-queue``'s value: a whole number, at least 1."""
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if size < 1:
        raise argparse.ArgumentTypeError("the queue must hold at least 1 waiting request")
    return size


_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_SIZE_UNITS |= {"k": 2**10, "kib": 2**10, "m": 2**20, "mib": 2**20, "g": 2**30, "gib": 2**30, "tib": 2**40}


def _memory_size(text: str) -> int:
    """``--model-memory-budget``'s value: bytes, or a number with a unit (8GiB, 6.5GB, 512MiB, 4G)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a memory size such as 8GiB, 6GB or 512MiB")
    size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size <= 0:
        raise argparse.ArgumentTypeError("the memory budget must be above 0")
    return size


def _loaded_models(text: str) -> int:
    """``--max-loaded-models``'s value: a whole number, at least 1."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if count < 1:
        raise argparse.ArgumentTypeError("at least 1 model must be allowed")
    return count


def _access_flags(serve: argparse.ArgumentParser) -> None:
    """``serve``'s exposure and authentication flags (see webui/api/auth.py)."""
    group = serve.add_argument_group("access")
    group.add_argument(
        "--listen", action="store_true", help="serve to other machines (bind 0.0.0.0 unless --host is given)"
    )
    group.add_argument(
        "--api-key",
        action="append",
        metavar="KEY",
        help="require this key on /v1 and /api (Authorization: Bearer KEY); repeatable; also PALABRE_API_KEYS",
    )
    group.add_argument(
        "--admin-key",
        action="append",
        metavar="KEY",
        help="key allowed to load and unload models through the API; repeatable; also PALABRE_ADMIN_KEYS",
    )
    group.add_argument("--page-user", default=None, help="user name the page asks for (with --page-password)")
    group.add_argument("--page-password", default=None, help="password the page asks for")
    group.add_argument(
        "--page-auth", default=None, metavar="USER:PASS", help="both at once; also PALABRE_PAGE_AUTH"
    )
    group.add_argument(
        "--cors-origin",
        action="append",
        metavar="ORIGIN",
        help="allow browser calls from ORIGIN (repeatable)",
    )
    group.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="also answer to this host name (NAME, NAME:PORT, or '*' for any; repeatable), e.g. the name "
        "a reverse proxy forwards; other names are refused (DNS rebinding); also PALABRE_ALLOWED_HOSTS",
    )
    group.add_argument(
        "--open-page",
        action="store_true",
        help="with --admin-key but no page password: serve anyway, letting whoever opens the page load, "
        "unload and delete models without the admin key",
    )
    group.add_argument(
        "--insecure",
        action="store_true",
        help="allow serving on a non-loopback address without an API key and a page password",
    )


def _access_config(args: argparse.Namespace) -> dict[str, Any]:
    """AppConfig's host and access fields from ``serve``'s flags and the PALABRE_* environment variables."""
    if args.command != "serve":
        return {}
    from webui.api.auth import AuthConfigError, allowed_hosts, collect_keys, parse_page_auth

    host = args.host or ("0.0.0.0" if args.listen else "127.0.0.1")
    page_auth = args.page_auth
    if page_auth is None and not (args.page_user or args.page_password):
        page_auth = os.environ.get("PALABRE_PAGE_AUTH")  # flags win over the environment
    try:
        return {
            "host": host,
            "api_keys": collect_keys(args.api_key, os.environ.get("PALABRE_API_KEYS"), what="API key"),
            "admin_keys": collect_keys(
                args.admin_key, os.environ.get("PALABRE_ADMIN_KEYS"), what="admin key"
            ),
            "page_auth": parse_page_auth(args.page_user, args.page_password, page_auth),
            "cors_origins": tuple(dict.fromkeys(o.strip() for o in args.cors_origin or () if o.strip())),
            "allowed_hosts": allowed_hosts(args.allowed_host, os.environ.get("PALABRE_ALLOWED_HOSTS")),
            "open_page": args.open_page,
            "insecure": args.insecure,
        }
    except AuthConfigError as exc:
        raise CliError(str(exc)) from exc


def _download_parsers(models_sub: Any) -> None:
    """``models files REPO`` and ``models download REPO [--file F ...]`` (Hugging Face Hub)."""
    files = models_sub.add_parser(
        "files", help="list a Hugging Face repository's files, sizes and quantizations"
    )
    download = models_sub.add_parser(
        "download", help="download from the Hugging Face Hub into user_data/models"
    )
    for command in (files, download):
        command.add_argument("repo", help="org/model or a huggingface.co address")
        command.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
        command.add_argument(
            "--token", default=None, help="Hugging Face token (default: HF_TOKEN or your login)"
        )
        command.add_argument("--user-data-dir", type=Path, default=None)
    download.add_argument(
        "--file",
        action="append",
        dest="files",
        metavar="F",
        help="file to download (repeatable; a split GGUF's first part brings all parts; "
        "default: the only GGUF, or the whole Transformers repository)",
    )


def _catalog_parser(models_sub: Any) -> None:
    """``models catalog [--download NAME --quant Q]``: the curated models, their fit here, one-step download."""
    catalog = models_sub.add_parser(
        "catalog",
        help="list current small and mid-size GGUF models: sizes per quantization, capabilities, fit here",
    )
    catalog.add_argument(
        "--download", default=None, metavar="MODEL", help="download this catalog model (its name or repo id)"
    )
    catalog.add_argument(
        "--quant", default=None, help="quantization to download (default: the largest one that fits)"
    )
    catalog.add_argument(
        "--refresh", action="store_true", help="read the sizes from the Hugging Face Hub's live listings"
    )
    catalog.add_argument("--token", default=None, help="Hugging Face token (default: HF_TOKEN or your login)")
    catalog.add_argument("--user-data-dir", type=Path, default=None)


def _bench_parser(sub: Any) -> None:
    from webui.benchmarks.runner import add_bench_arguments  # argparse only; the sections load lazily

    bench = sub.add_parser(
        "bench", help="benchmark Palabre against the raw backend, side by side (medians and ratios)"
    )
    add_bench_arguments(bench)


def _characters_parser(sub: Any) -> None:
    characters = sub.add_parser("characters", help="list, import or export personalities")
    characters_sub = characters.add_subparsers(dest="characters_command", required=True)
    listing = characters_sub.add_parser("list", help="list the bundled and your own personalities")
    listing.add_argument("--user-data-dir", type=Path, default=None)
    importing = characters_sub.add_parser(
        "import", help="import a personality YAML/JSON, a Character Card (JSON or PNG) or an Ollama Modelfile"
    )
    importing.add_argument("file", type=Path, help="the file to import")
    importing.add_argument(
        "--name", default=None, help="save it under this name (default: the name in the file)"
    )
    importing.add_argument("--overwrite", action="store_true", help="replace your personality of that name")
    importing.add_argument("--user-data-dir", type=Path, default=None)
    exporting = characters_sub.add_parser("export", help="export a personality")
    exporting.add_argument("name", help="the personality to export")
    exporting.add_argument(
        "--format", required=True, choices=["yaml", "card-json", "card-png", "modelfile"], dest="format"
    )
    exporting.add_argument(
        "--output", type=Path, default=None, help="file or folder to write (default: user_data/exports/)"
    )
    exporting.add_argument("--user-data-dir", type=Path, default=None)


def _extension_names(names: Sequence[str] | None) -> tuple[str, ...] | None:
    """``--extensions a b`` (also ``a,b``) as names in order; None when the flag was not given."""
    if names is None:
        return None
    split = (part.strip() for name in names for part in name.split(","))
    return tuple(dict.fromkeys(part for part in split if part))


def _image_hosts(hosts: Sequence[str] | None) -> tuple[str, ...]:
    """``--allow-image-host`` values, checked (a URL or a path is refused in words)."""
    from webui.core.image_fetch import normalise_hosts

    try:
        return normalise_hosts(hosts or ())
    except ValueError as exc:
        raise CliError(f"--allow-image-host: {exc}") from exc


def config_from_args(args: argparse.Namespace) -> AppConfig:
    return AppConfig(
        user_data_dir=(args.user_data_dir or default_user_data_dir()).resolve(),
        port=getattr(args, "port", 7860),
        model=getattr(args, "model", None),
        loader=getattr(args, "loader", None),
        loader_settings=_parse_settings(getattr(args, "setting", None)),
        autoload_default_model=not getattr(args, "no_model", False),
        idle_unload_minutes=getattr(args, "idle_unload", None),
        max_queue=getattr(args, "max_queue", 16),
        model_memory_budget=getattr(args, "model_memory_budget", None),
        max_loaded_models=getattr(args, "max_loaded_models", 3),
        max_upload_mb=getattr(args, "max_upload_mb", 50.0),
        embedding_model=getattr(args, "embedding_model", None),
        extensions=_extension_names(getattr(args, "extensions", None)),
        image_hosts=_image_hosts(getattr(args, "allow_image_host", None)),
        **_access_config(args),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from webui import commands  # deferred so `webui --help` stays instant

    try:
        config = config_from_args(args)
        if args.command == "serve":
            return commands.serve(config, force=args.force)
        if args.command == "generate":
            return commands.generate(config, args)
        if args.command == "chat":
            return commands.chat(config, args)
        if args.command == "characters":
            return commands.characters(config, args)
        if args.command == "extensions":
            return commands.list_extensions(config)
        if args.command == "bench":
            return commands.bench(config, args)
        if args.command == "knowledge":
            return knowledge_cli.run(config, args)
        if args.models_command == "list":
            return commands.list_models(config)
        if args.models_command == "inspect":
            return commands.inspect_model(config, args)
        if args.models_command == "catalog":
            return commands.catalog(config, args)
        if args.models_command in ("files", "download"):
            return commands.hub(config, args)
        return commands.provision(config)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
