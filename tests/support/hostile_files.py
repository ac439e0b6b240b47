"""Hostile inputs shared by the security tests: SSTI payloads, traversal names, and GGUF files built byte by byte.

A payload that would run code writes a canary file (``{marker}``) or sets an environment variable
(``PALABRE_PWNED``); the tests assert that neither ever appears.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

CANARY_ENV = "PALABRE_PWNED"

# Server-side template injection: each would run a shell command, reach Python internals or exhaust the host
# if the sandbox let it. ``{marker}`` is replaced by a canary path.
ESCAPE_PAYLOADS: tuple[str, ...] = (
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ [].__class__.__base__.__subclasses__()[-1] }}",
    "{{ (1).__class__.__base__.__subclasses__() }}",
    "{{ messages.__class__.__mro__[-1].__subclasses__() }}",
    "{{ messages[0].__class__.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}",
    "{{ joiner.__init__.__globals__['os'].system('touch {marker}') }}",
    "{{ namespace.__init__.__globals__.os.popen('touch {marker}').read() }}",
    "{{ lipsum.__globals__['os'].popen('touch {marker}').read() }}",
    "{{ lipsum.__globals__.__builtins__.__import__('os').system('touch {marker}') }}",
    "{{ range.__globals__ }}",
    "{{ range.__self__.__import__('os').system('touch {marker}') }}",
    "{{ raise_exception.__globals__['__builtins__']['__import__']('os').system('touch {marker}') }}",
    "{{ strftime_now.__globals__.__builtins__.open('{marker}', 'w').write('x') }}",
    "{{ self.__init__.__globals__.__builtins__.__import__('os').system('touch {marker}') }}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.popen('touch {marker}').read() }}",
    "{{ self._TemplateReference__context.joiner.__init__.__globals__.os.system('touch {marker}') }}",
    "{{ self._TemplateReference__context.namespace.__init__.__globals__.os.environ.update("
    + CANARY_ENV
    + "='1') }}",
    "{{ cycler.__init__.__globals__.os.environ.__setitem__('" + CANARY_ENV + "', '1') }}",
    "{{ request.application.__globals__.__builtins__.__import__('os').popen('touch {marker}').read() }}",
    "{{ config.__class__.__init__.__globals__['os'].popen('touch {marker}').read() }}",
    "{{ url_for.__globals__.os.popen('touch {marker}').read() }}",
    "{{ get_flashed_messages.__globals__.__builtins__.open('{marker}', 'w') }}",
    "{{ '{0.__class__.__mro__[1].__subclasses__}'.format('') }}",
    "{{ '{0.__class__}'.format(messages) }}",
    "{{ '{m.__class__.__init__.__globals__}'.format_map({'m': messages}) }}",
    "{{ '{0.__class__}'|attr('format')(messages) }}",
    "{{ '%s'|format(messages.__class__) }}",
    "{{ messages|attr('__class__')|attr('__mro__') }}",
    "{{ ''|attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
    "{{ (messages|first).update(role='x') }}{{ messages.append(1) }}",
    "{{ messages.pop() }}",
    "{{ namespace(a=1).__dict__ }}",
    "{% for m in messages %}{{ loop.__class__.__init__.__globals__ }}{% endfor %}",
    "{{ ''.format.__self__.__class__ }}",
    "{{ tools.__class__ }}",
    "{% include '/etc/passwd' %}",
    "{% import 'os' as os %}{{ os.system('touch {marker}') }}",
    "{% extends '../../../etc/passwd' %}",
    "{{ namespace(a=1)._Namespace__attrs }}",
)

# Resource exhaustion: the render is stopped (time or size limit) instead of taking the host down.
EXHAUSTION_PAYLOADS: tuple[str, ...] = (
    "{% for i in range(10**9) %}{% endfor %}",
    "{{ 'a' * 1000000000 }}",
    "{{ 'ab' * (10**5) * (10**5) }}",
    "{{ 9 ** (9 ** 9) }}",
    "{{ '%0999999999d' % 1 }}",
    "{{ '{0:{1}}'.format(1, 999999999) }}",
    "{{ 'x'|center(999999999) }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "{% macro f(n) %}{{ f(n) ~ f(n) }}{% endmacro %}{{ f(1) }}",
    "{% set l = ['x' * 1000000] * 1000 %}{{ l|join }}",
)

# Slow on purpose (nested loops): stopped by the per-render time limit.
SLOW_PAYLOAD = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"

# Templates that do not even parse safely: deep nesting that overflows Jinja's parser or Python's compiler.
DEEP_PAYLOADS: tuple[str, ...] = (
    "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}",
    "{{ " + "[" * 5000 + "]" * 5000 + " }}",
    "{% if true %}" * 120 + "x" + "{% endif %}" * 120,
    "{% for a in [1] %}" * 40 + "x" + "{% endfor %}" * 40,
    "{{ 1" + " + 1" * 50000 + " }}",
    "{{ x" + ".y" * 50000 + " }}",
)


def payloads(marker: Path) -> list[str]:
    """Every escape and exhaustion payload, with the canary path filled in."""
    return [p.replace("{marker}", str(marker)) for p in ESCAPE_PAYLOADS + EXHAUSTION_PAYLOADS]


# -- names that would become paths ---------------------------------------------------------------------------

TRAVERSAL_NAMES: tuple[str, ...] = (
    "../escaped",
    "../../escaped",
    "..\\escaped",
    "..\\..\\escaped",
    "/tmp/escaped",
    "/etc/passwd",
    "C:\\Windows\\escaped",
    "%2e%2e%2fescaped",
    "..%2fescaped",
    "%2e%2e/escaped",
    "escaped\0.yaml",
    "\uff0e\uff0e\uff0fescaped",  # fullwidth ../
    "..\u2215escaped",  # division slash
    "..\u2044escaped",  # fraction slash
    "..",
    ".",
    "escaped.",
    "escaped ",
    " escaped",
    "CON",
    "nul",
    "COM1.yaml",
    "a" * 5000,
    "sub/escaped",
    "~/escaped",
    "$HOME/escaped",
    "escaped\n",
    "",
)


# -- GGUF bytes ----------------------------------------------------------------------------------------------


def gguf_string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def gguf_bytes(
    entries: list[bytes], *, tensor_count: int = 0, version: int = 3, magic: bytes = b"GGUF"
) -> bytes:
    """A GGUF header with ``entries`` (each key + type + value, already encoded)."""
    return magic + struct.pack("<IQQ", version, tensor_count, len(entries)) + b"".join(entries)


def gguf_kv_string(key: str, value: str | bytes) -> bytes:
    return gguf_string(key) + struct.pack("<I", 8) + gguf_string(value)


def retemplate_gguf(source: Path, target: Path, template: str) -> None:
    """Copy the real GGUF ``source`` to ``target`` with ``tokenizer.chat_template`` replaced by ``template``.

    The tensor data stays byte-identical: the new template is padded (inside a Jinja comment) so that the
    header grows by a multiple of the file's alignment, which keeps every tensor offset valid.
    """
    from webui.core.models.gguf_header import read_gguf_header

    header = read_gguf_header(source)
    alignment = int(header.get("general.alignment", 32))  # type: ignore[call-overload]
    old = header["tokenizer.chat_template"]
    assert isinstance(old, str)
    needle = gguf_string("tokenizer.chat_template") + struct.pack("<I", 8) + gguf_string(old)
    with source.open("rb") as handle:
        head = handle.read(64 * 1024 * 1024)
    start = head.find(needle)
    assert start > 0, "the chat template was not found in the header"
    new = template.encode()
    pad = -(len(new) + 4 - len(old.encode())) % alignment
    new += b"{#" + b" " * pad + b"#}"
    replacement = gguf_string("tokenizer.chat_template") + struct.pack("<I", 8) + gguf_string(new)
    with source.open("rb") as src, target.open("wb") as dst:
        dst.write(head[:start] + replacement)
        src.seek(start + len(needle))
        shutil.copyfileobj(src, dst, 16 * 1024 * 1024)
