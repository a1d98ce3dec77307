"""Command-line flags generated from a config dataclass, so a field and its flag never drift.

A field may hold a nested config (a dataclass such as :class:`~captioner.config.ModelConfig`):
its ``metadata["flags"]`` names the nested fields that get flags of their own (name -> help),
each typed and defaulted from the nested config. The flags stay flat (``--embed-dim``, not
``--model.embed-dim``), and so does :func:`config_settings`, the form that ``config.json`` and
checkpoints record.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["config_from_settings", "config_parser", "config_settings"]

_TYPES = {"int": int, "float": float}  # annotations are strings (postponed evaluation)


def config_parser(config_class: type, description: str | None) -> argparse.ArgumentParser:
    """One ``--flag-name`` per field: bools are switches (``--no-flag-name`` turns one off), fields
    without a default are required, ints and floats are parsed as such, everything else stays a string."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for field, default, help_text in _flag_fields(config_class):
        flag = "--" + field.name.replace("_", "-")
        with_default = f"{help_text} (default {default})".strip()
        if field.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=with_default)
        elif default is dataclasses.MISSING:
            parser.add_argument(flag, required=True, help=help_text or None)
        else:
            parser.add_argument(flag, type=_TYPES.get(field.type, str), default=default, help=with_default)
    return parser


def config_from_settings(config_class: type, settings: Mapping[str, Any]) -> Any:
    """``config_class`` from flat settings (parsed flags, or keywords named like them): a nested
    config's flags replace the fields of its default.

    Raises:
        TypeError: a setting that is no flag of ``config_class``, or a required one missing.
    """
    unknown = set(settings) - {field.name for field, _, _ in _flag_fields(config_class)}
    if unknown:
        raise TypeError(f"{config_class.__name__} has no setting {', '.join(sorted(unknown))}")
    values = {}
    for field in dataclasses.fields(config_class):
        nested = field.metadata.get("flags")
        if nested is not None:
            values[field.name] = dataclasses.replace(
                _default(field), **{name: settings[name] for name in nested if name in settings}
            )
        elif field.name in settings:
            values[field.name] = settings[field.name]
    return config_class(**values)


def config_settings(config: Any) -> dict[str, Any]:
    """The flat settings of ``config``, one per flag (the inverse of :func:`config_from_settings`)."""
    settings = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        nested = field.metadata.get("flags")
        if nested is not None:
            settings.update({name: getattr(value, name) for name in nested})
        else:
            settings[field.name] = value
    return settings


def _flag_fields(config_class: type) -> Iterator[tuple[dataclasses.Field, Any, str]]:
    """(field, default, help) for every flag of ``config_class``, nested configs' flags in their place."""
    for field in dataclasses.fields(config_class):
        nested = field.metadata.get("flags")
        if nested is None:
            yield field, field.default, field.metadata.get("help", "")
            continue
        default = _default(field)
        inner = {f.name: f for f in dataclasses.fields(default)}
        for name, help_text in nested.items():
            yield inner[name], getattr(default, name), help_text


def _default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default
