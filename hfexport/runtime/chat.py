"""Chat templates rendered with jinja2 the way transformers renders them, without transformers.

transformers compiles `chat_template` in an immutable sandbox with trim_blocks, lstrip_blocks and the
loopcontrols extension, plus `raise_exception`, `strftime_now` and a `tojson` that keeps non-ASCII;
the same environment here renders the same text.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from hfexport.errors import BundleIntegrityError


def read_chat_template(tokenizer_dir: Path) -> str | None:
    """The default template: chat_template.jinja (transformers 5 writes it) or tokenizer_config.json's."""
    jinja_file = tokenizer_dir / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    config_file = tokenizer_dir / "tokenizer_config.json"
    if not config_file.is_file():
        return None
    template = json.loads(config_file.read_text(encoding="utf-8")).get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template}
        template = named.get("default") or next(iter(named.values()), None)
    return template


_MAX_REPEAT = 1_000_000  # characters or items one `*` in a chat template may produce


@lru_cache(maxsize=8)
def _compile(template: str):
    try:
        import jinja2
        from jinja2.exceptions import SecurityError
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as exc:
        raise BundleIntegrityError("chat templates need jinja2: pip install jinja2") from exc

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def strftime_now(fmt):
        from datetime import datetime

        return datetime.now().strftime(fmt)

    class _Bounded(ImmutableSandboxedEnvironment):
        """The sandbox already refuses private attributes, unsafe calls, changes to lists and dicts, and
        has no loader (no include/import/extends of files); this also bounds `*` and `**`, so a template
        cannot ask for a gigabyte string or a huge number."""

        intercepted_binops = frozenset(["*", "**"])

        def call_binop(self, context, operator, left, right):
            if operator == "**" and isinstance(right, (int, float)) and abs(right) > 1000:
                raise SecurityError("exponent too large in a chat template")
            if operator == "*":
                sizes = [len(v) for v in (left, right) if isinstance(v, (str, list, tuple))]
                counts = [v for v in (left, right) if isinstance(v, int) and not isinstance(v, bool)]
                if sizes and counts and sizes[0] * max(counts[0], 0) > _MAX_REPEAT:
                    raise SecurityError("a repeated string or list too long for a chat template")
            return super().call_binop(context, operator, left, right)

    env = _Bounded(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, indent=None, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(template)


def render_chat(template: str, messages: list[dict], *, add_generation_prompt: bool = True,
                special_tokens: dict | None = None, **variables) -> str:
    return _compile(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                     **(special_tokens or {}), **variables)
