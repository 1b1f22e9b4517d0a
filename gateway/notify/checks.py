"""The notification subsystem's configuration checks: what the channel plugins make of their options, and the
template parts each channel needs (gateway.settings hands them to the loader, beside the file's own checks)."""

from __future__ import annotations

from gateway.config.models import Settings
from gateway.config.notifications import DEFAULT_TEMPLATE_PART
from gateway.notify.channel import PluginError, load_channel

Location = tuple[str | int, ...]


def channel_errors(settings: Settings) -> list[tuple[Location, str]]:
    """Every channel built as `run` builds it (a plugin that cannot load or refuses its options is an error at
    its keys), then every template and hook checked for the parts its channels need."""
    config = settings.notifications
    errors: list[tuple[Location, str]] = []
    parts: dict[str, frozenset[str]] = {}
    for name, channel in config.channels.items():
        try:
            parts[name] = load_channel(name, channel, public_url=settings.server.public_url).parts
        except PluginError as exc:
            errors.extend((("notifications", "channels", name, *loc), message) for loc, message in exc.problems)
    for template_id, template in config.templates.items():
        for key, declared in template.items():
            for needed in sorted(parts.get(key, frozenset())):
                if getattr(declared, needed, None) is None:
                    location: Location = ("notifications", "templates", template_id, key)
                    errors.append((location, f"channel '{key}' needs a '{needed}'"))
    for index, hook in enumerate(settings.hooks):
        hook_template = config.templates.get(hook.notify.template)
        if hook_template is None:
            continue
        for position, channel_name in enumerate(hook.notify.channels):
            if channel_name not in parts:
                continue
            part = hook_template.get(channel_name) or hook_template.get(DEFAULT_TEMPLATE_PART)
            missing = [p for p in sorted(parts[channel_name]) if part is None or getattr(part, p, None) is None]
            if missing:
                detail = f"template '{hook.notify.template}' has no {'/'.join(missing)} for channel '{channel_name}'"
                errors.append((("hooks", index, "notify", "channels", position), detail))
    return errors
