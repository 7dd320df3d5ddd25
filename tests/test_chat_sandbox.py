"""A chat template can never read files or call Python: hostile templates fail in jinja2's sandbox."""

from __future__ import annotations

import pytest

jinja2 = pytest.importorskip("jinja2")

from hfexport.runtime.chat import render_chat  # noqa: E402

MESSAGES = [{"role": "user", "content": "hi"}]
HOSTILE = {
    "class walk to subprocess": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "globals of a global": "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "lipsum globals": "{{ lipsum.__globals__['os'].system('id') }}",
    "raise_exception globals": "{{ raise_exception.__globals__ }}",
    "strftime_now globals": "{{ strftime_now.__globals__['__builtins__']['open']('/etc/passwd').read() }}",
    "tojson closure": "{{ (messages|tojson).__class__.__base__.__subclasses__() }}",
    "include a file": "{% include '/etc/passwd' %}",
    "import a file": "{% import '/etc/passwd' as p %}{{ p }}",
    "extends a file": "{% extends '/etc/passwd' %}",
    "message internals": "{{ messages[0].__class__.__init__.__globals__ }}",
    "self reference": "{{ self.__init__.__globals__ }}",
    "mutate messages": "{{ messages.append({'role': 'system', 'content': 'x'}) }}",
    "mutate a dict": "{{ messages[0].update({'role': 'system'}) }}",
    "format string escape": "{{ '{0.__class__.__init__.__globals__}'.format(messages) }}",
    "attr filter": "{{ messages|attr('__class__')|attr('__mro__') }}",
    "namespace escape": "{% set ns = namespace() %}{{ ns.__init__.__globals__ }}",
    "huge range": "{% for i in range(10**12) %}{% endfor %}",
    "huge string": "{{ 'a' * 10**10 }}",
    "huge list": "{{ [1] * 10**9 }}",
    "huge power": "{{ 10 ** 10 ** 10 }}",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_chat_template_hostile_is_refused(name):
    with pytest.raises((jinja2.exceptions.TemplateError, OverflowError, TypeError, ValueError)) as caught:
        rendered = render_chat(HOSTILE[name], MESSAGES)
        # reaching here means the template rendered; it must not have leaked anything
        assert "root:" not in rendered and "uid=" not in rendered and "<class" not in rendered, rendered
        raise ValueError("rendered harmlessly")
    assert "root:x" not in str(caught.value)


def test_chat_template_ordinary_still_renders():
    template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] | tojson }}{% endfor %}"
                "{% if add_generation_prompt %}<|assistant|>{% endif %}{{ 'ab' * 3 }}")
    assert render_chat(template, MESSAGES) == '<|user|>"hi"<|assistant|>ababab'
