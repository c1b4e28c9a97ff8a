"""Frozen value types describing an instrument, shared by parsing, scoring and bundles."""

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal


@dataclass(frozen=True)
class Subscale:
    """A coding that names what a score measures."""

    system: str
    code: str
    display: str | None


@dataclass(frozen=True)
class Option:
    """One answer a client can pick, with the ordinal value it scores as."""

    code: str
    system: str | None
    display: str
    ordinal: Decimal


@dataclass(frozen=True)
class Group:
    """A Questionnaire group an item sits in, kept so responses mirror the form."""

    link_id: str
    text: str | None


@dataclass(frozen=True)
class Item:
    """One question the client sees."""

    link_id: str
    text: str
    kind: Literal["choice", "text"]
    required: bool
    subscale: Subscale | None
    options: tuple[Option, ...]
    max_length: int | None
    groups: tuple[Group, ...] = ()

    def option(self, code: str) -> Option | None:
        """Return the option with this code, or None."""
        return next((o for o in self.options if o.code == code), None)


@dataclass(frozen=True)
class Instrument:
    """A parsed questionnaire: its identity and its answerable items in order."""

    url: str
    version: str
    title: str
    language: str | None
    items: tuple[Item, ...]
    code: Subscale | None

    @property
    def canonical(self) -> str:
        """Return the versioned canonical reference, url|version."""
        return f"{self.url}|{self.version}"

    @property
    def choice_items(self) -> tuple[Item, ...]:
        """Return the items that carry a score."""
        return tuple(i for i in self.items if i.kind == "choice")
