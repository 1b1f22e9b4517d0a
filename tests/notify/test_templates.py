"""Templates render in Jinja2's sandbox, and a missing variable names itself and its template."""

from __future__ import annotations

import pytest

from gateway.config.notifications import TemplatePart
from gateway.notify.templates import Content, TemplateDataError, Templates

TEMPLATES = Templates(
    {
        "order": {
            "email": TemplatePart(
                subject="Order {{ order.id }}", body="{{ order.lines | length }} item(s) for {{ name }}"
            ),
            "default": TemplatePart(body="Order {{ order.id }}"),
        },
        "sneaky": {"default": TemplatePart(body="{{ ''.__class__.__mro__[1].__subclasses__() }}")},
    }
)


def test_a_channel_part_wins_over_the_default_part() -> None:
    data = {"order": {"id": 7, "lines": [1, 2]}, "name": "Ada"}
    assert TEMPLATES.render("order", "email", data) == Content("Order 7", "2 item(s) for Ada")
    assert TEMPLATES.render("order", "sms", data) == Content(None, "Order 7")


def test_missing_variables_are_named_with_the_template_and_channel() -> None:
    with pytest.raises(TemplateDataError) as caught:
        TEMPLATES.render("order", "email", {})
    assert caught.value.variables == ["name", "order"]
    assert str(caught.value) == "template 'order' (channel 'email'): missing variable(s) 'name', 'order'"
    with pytest.raises(TemplateDataError) as nested:
        TEMPLATES.render("order", "email", {"order": {"id": 1}, "name": "Ada"})
    assert nested.value.variables == ["lines"]


def test_the_sandbox_refuses_unsafe_attribute_access() -> None:
    with pytest.raises(TemplateDataError, match="sneaky"):
        TEMPLATES.render("sneaky", "log", {})
