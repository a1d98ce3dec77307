"""Command-line flags generated from a config dataclass, so a field and its flag never drift."""

from __future__ import annotations

import argparse
import dataclasses

__all__ = ["config_parser"]

_TYPES = {"int": int, "float": float}  # annotations are strings (postponed evaluation)


def config_parser(config_class: type, description: str | None) -> argparse.ArgumentParser:
    """One ``--flag-name`` per field: bools are switches (``--no-flag-name`` turns one off), fields
    without a default are required, ints and floats are parsed as such, everything else stays a string."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for field in dataclasses.fields(config_class):
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata.get("help", "")
        with_default = f"{help_text} (default {field.default})".strip()
        if field.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default, help=with_default)
        elif field.default is dataclasses.MISSING:
            parser.add_argument(flag, required=True, help=help_text or None)
        else:
            kind = _TYPES.get(field.type, str)
            parser.add_argument(
                flag, type=kind, default=field.default, help=f"{help_text} (default {field.default})".strip()
            )
    return parser
