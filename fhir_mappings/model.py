"""Frozen value types describing an instrument, shared by parsing, scoring and bundles."""

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
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
    # language -> {"title" | "item:<linkId>" | "group:<linkId>" | "option:<linkId>:<code>": text},
    # from the Questionnaire's translation extensions; not part of the instrument's identity.
    translations: Mapping[str, Mapping[str, str]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def in_language(self, language: str) -> "Instrument":
        """Return the instrument with its text in `language`, where a translation exists.

        Codes, ordinals and link ids never change, so scoring is the same in every language;
        text without a translation stays in the original.
        """
        texts = self.translations.get(language)
        if not texts or language == self.language:
            return self

        def text(key: str, original: str) -> str:
            return texts.get(key, original)

        def group(g: Group) -> Group:
            return replace(g, text=text(f"group:{g.link_id}", g.text) if g.text else g.text)

        def item(i: Item) -> Item:
            options = tuple(
                replace(o, display=text(f"option:{i.link_id}:{o.code}", o.display))
                for o in i.options
            )
            return replace(
                i,
                text=text(f"item:{i.link_id}", i.text),
                options=options,
                groups=tuple(group(g) for g in i.groups),
            )

        return replace(
            self,
            title=text("title", self.title),
            language=language,
            items=tuple(item(i) for i in self.items),
        )

    @property
    def canonical(self) -> str:
        """Return the versioned canonical reference, url|version."""
        return f"{self.url}|{self.version}"

    @property
    def choice_items(self) -> tuple[Item, ...]:
        """Return the items that carry a score."""
        return tuple(i for i in self.items if i.kind == "choice")
