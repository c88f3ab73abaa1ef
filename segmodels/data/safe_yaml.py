"""YAML written by users or read back from lakeFS, parsed without alias expansion.

``yaml.safe_load`` expands every alias: a few hundred bytes of nested anchors (a "billion laughs" document) become
gigabytes of objects, and any message formatting them gigabytes of text. Aliases are refused here instead; no
file segmodels writes uses them.
"""

from __future__ import annotations

import yaml


class AliasRefused(yaml.YAMLError):
    """A document that uses an alias (``*name``)."""


class NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases as it composes the document (before anything is expanded); the pure
    Python loader, as the C one composes without calling :meth:`compose_node`."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            line = f" (line {event.start_mark.line + 1})" if event.start_mark else ""
            raise AliasRefused(f"YAML alias *{str(event.anchor)[:40]}{line}: aliases are not accepted")
        return super().compose_node(parent, index)


def load_yaml(text: str | bytes):
    """The document in ``text`` as plain Python (``yaml.safe_load``), refusing aliases (:class:`AliasRefused`, a
    ``yaml.YAMLError``)."""
    return yaml.load(text, Loader=NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
