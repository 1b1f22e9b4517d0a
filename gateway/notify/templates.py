"""Templates per id and channel, rendered in Jinja2's sandbox with StrictUndefined.

Every template a notification uses is rendered when the request is accepted, so a missing variable is a 400
naming it, never a failure at send time; the rendered text is what the workers send.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, Template, UndefinedError, meta
from jinja2.sandbox import SandboxedEnvironment

from gateway.config.notifications import DEFAULT_TEMPLATE_PART, TemplatePart
from gateway.exceptions import GatewayError

_HEADER_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\u2028\u2029\x85]")
_UNDEFINED = re.compile(r"'([^']+)' is undefined|has no attribute '([^']+)'")


@dataclass(frozen=True, slots=True)
class Content:
    subject: str | None
    body: str


class TemplateDataError(GatewayError):
    """The data does not fill a template: names the template, the channel and the variables."""

    status = 400
    error = "template_error"

    def __init__(self, template_id: str, channel: str, variables: Iterable[str] = (), detail: str = "") -> None:
        self.template_id = template_id
        self.channel = channel
        self.variables = sorted(variables)
        if self.variables:
            detail = f"missing variable(s) {', '.join(repr(v) for v in self.variables)}"
        super().__init__(f"template '{template_id}' (channel '{channel}'): {detail}")
        self.extra = {"template_id": template_id, "channel": channel, "variables": self.variables}


class UnknownTemplate(KeyError):
    pass


@dataclass(frozen=True, slots=True)
class _Compiled:
    subject: Template | None
    body: Template
    variables: frozenset[str]


class Templates:
    def __init__(self, templates: Mapping[str, Mapping[str, TemplatePart]]) -> None:
        self._env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
        self._compiled: dict[tuple[str, str], _Compiled] = {}
        for template_id, parts in templates.items():
            for channel, part in parts.items():
                sources = [source for source in (part.subject, part.body) if source is not None]
                variables: set[str] = set()
                for source in sources:
                    variables |= meta.find_undeclared_variables(self._env.parse(source))
                self._compiled[(template_id, channel)] = _Compiled(
                    subject=self._env.from_string(part.subject) if part.subject is not None else None,
                    body=self._env.from_string(part.body),
                    variables=frozenset(variables),
                )
        self.ids = frozenset(templates)

    def render(
        self, template_id: str, channel: str, data: Mapping[str, Any], needs: frozenset[str] = frozenset()
    ) -> Content:
        """The template's part for `channel` (else its "default" part) filled with `data`; `needs` names the parts
        the channel cannot do without (an email's subject)."""
        if template_id not in self.ids:
            raise UnknownTemplate(template_id)
        compiled = self._compiled.get((template_id, channel))
        if compiled is None:
            compiled = self._compiled.get((template_id, DEFAULT_TEMPLATE_PART))
        if compiled is None or ("subject" in needs and compiled.subject is None):
            raise TemplateDataError(template_id, channel, detail="the template has no part (or no subject) for it")
        missing = compiled.variables - set(data)
        if missing:
            raise TemplateDataError(template_id, channel, missing)
        try:
            subject = compiled.subject.render(data) if compiled.subject is not None else None
            body = compiled.body.render(data)
        except UndefinedError as exc:  # an attribute or key missing inside a variable that is present
            found = _UNDEFINED.search(str(exc))
            name = next((group for group in found.groups() if group), str(exc)) if found else str(exc)
            raise TemplateDataError(template_id, channel, [name]) from None
        except Exception as exc:  # TemplateError, SecurityError, or a TypeError from the data itself
            raise TemplateDataError(template_id, channel, detail=str(exc)) from None
        if subject is not None and _HEADER_UNSAFE.search(subject):
            # A subject becomes a mail header (and a line in many receivers): a line break would start a new one.
            raise TemplateDataError(template_id, channel, detail="the subject holds a line break or control character")
        return Content(subject, body)
