"""The sandboxed chat-template environment: HF's helpers, errors and the sandbox itself."""

from __future__ import annotations

import pytest
from bastion.model.chat_template import ChatTemplate

USER = [{"role": "user", "content": "héllo"}]


def test_raise_exception_becomes_value_error() -> None:
    template = ChatTemplate("{% if messages[0]['role'] != 'system' %}{{ raise_exception('system first') }}{% endif %}")
    with pytest.raises(ValueError, match="system first"):
        template.render(USER)


def test_tojson_keeps_non_ascii_and_generation_block_renders() -> None:
    template = ChatTemplate("{% generation %}{{ messages[0] | tojson }}{% endgeneration %}")
    assert template.render(USER) == '{"role": "user", "content": "héllo"}'


def test_strftime_now_and_extra_variables() -> None:
    template = ChatTemplate("{{ strftime_now('%Y') | length }}|{{ tools | length }}")
    assert template.render(USER, tools=[1, 2]) == "4|2"


def test_sandbox_blocks_attribute_escape() -> None:
    template = ChatTemplate("{{ ''.__class__.__mro__ }}")
    with pytest.raises(ValueError, match="unsafe"):
        template.render(USER)


def test_invalid_template_is_reported() -> None:
    with pytest.raises(ValueError, match="invalid chat template"):
        ChatTemplate("{% for m in messages %}")
