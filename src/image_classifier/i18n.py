"""The study's languages: English and Spanish messages for the web page and the report.

The catalogs are ``locales/<lang>.json``, flat ``{key: message}`` maps with the same keys in
every language. Keys name where a message is shown (``page.status.ready``,
``report.narrative.headline.best``). A message names its placeholders, ``{model}``, ``{count}``;
the values given for them are already formatted (numbers through :meth:`Translator.number` or
:meth:`Translator.percent`), never format specs, so one syntax serves Python and the page's
JavaScript, and a class name such as ``{label}`` or ``<b>x</b>`` passed as a value is inserted
as it is: class, model and file names are values, never looked up in a catalog.

Plural forms are two keys, ``KEY.one`` and ``KEY.other``: English and Spanish both use the
singular for exactly one and the plural for everything else, zero included.

Bottom layer: imports nothing from the package.
"""
from __future__ import annotations

import functools
import html
import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType

__all__ = ["SUPPORTED", "DEFAULT", "LANGUAGE_NAMES", "Translator", "catalog", "negotiate", "normalize",
           "parse_accept_language", "placeholders", "translator"]

SUPPORTED: tuple[str, ...] = ("en", "es")
DEFAULT = "en"
#: Each language by its own name, as a language switcher shows it.
LANGUAGE_NAMES: Mapping[str, str] = MappingProxyType({"en": "English", "es": "Español"})

MISSING = "–"  # what a number that is not known reads as, in every language

# RFC 9110 §12.4.2 qvalue: 0, 0.x to 0.xxx, 1, 1.0 to 1.000.
_QVALUE = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)")
# RFC 4647 §2.1 language-range: "*" or 1-8 letters, then "-" and 1-8 letters or digits, repeated.
_LANGUAGE_RANGE = re.compile(r"\*|[a-z]{1,8}(?:-[a-z0-9]{1,8})*")


def normalize(tag: str | None) -> str | None:
    """The supported language a tag asks for ("ES", "es-MX", "es_AR" -> "es"), or None."""
    if not tag:
        return None
    primary = tag.strip().lower().replace("_", "-").split("-", 1)[0]
    return primary if primary in SUPPORTED else None


def parse_accept_language(header: str | None) -> list[tuple[str, float]]:
    """``(language range, q)`` of an ``Accept-Language`` header, lower-cased, in header order.

    A malformed entry (a bad range or q-value) is left out rather than guessed at: the rest of
    the header still counts.
    """
    out: list[tuple[str, float]] = []
    for item in (header or "").split(","):
        parts = [p.strip() for p in item.split(";")]
        rng = parts[0].lower()
        if not _LANGUAGE_RANGE.fullmatch(rng):
            continue
        q = 1.0
        for param in parts[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                value = value.strip()
                q = float(value) if _QVALUE.fullmatch(value) else -1.0
        if q >= 0:
            out.append((rng, q))
    return out


def negotiate(query_lang: str | None, accept_language: str | None, default: str = DEFAULT) -> str:
    """The language to answer in: ``?lang=`` if it names a supported one, else the best match of
    ``Accept-Language`` (RFC 9110 §12.5.4), else ``default``.

    Matching is RFC 4647 "lookup": ranges in order of q (ties: header order), each shortened
    subtag by subtag until it names a supported language ("es-ES" -> "es"); ``*`` stands for the
    default. A supported language with q=0 is refused, even when another range leads to it.
    """
    if default not in SUPPORTED:
        raise ValueError(f"unsupported default language {default!r}: choose from {', '.join(SUPPORTED)}")
    asked = normalize(query_lang)
    if asked:
        return asked
    ranges = parse_accept_language(accept_language)
    refused = {rng for rng, q in ranges if q == 0}
    # sorted() is stable, so ranges with the same q keep the client's order.
    for rng, _q in sorted((r for r in ranges if r[1] > 0), key=lambda r: -r[1]):
        if rng == "*":
            candidates = [default, *SUPPORTED]
        else:
            subtags = rng.split("-")
            candidates = ["-".join(subtags[:n]) for n in range(len(subtags), 0, -1)]
        for tag in candidates:
            if tag in SUPPORTED and tag not in refused:
                return tag
    return default


def placeholders(message: str) -> frozenset[str]:
    """The names a message's placeholders use; ValueError for anything but plain ``{name}``."""
    names = set()
    for _literal, field, spec, conversion in string.Formatter().parse(message):
        if field is None:
            continue
        if not field.isidentifier() or spec or conversion:
            raise ValueError(f"placeholder {{{field}{'!' + conversion if conversion else ''}"
                             f"{':' + spec if spec else ''}}} in {message!r}: only {{name}} is allowed")
        names.add(field)
    return frozenset(names)


@functools.cache
def catalog(lang: str) -> Mapping[str, str]:
    """The messages of ``lang`` (read once, then cached, read-only)."""
    if lang not in SUPPORTED:
        raise ValueError(f"unsupported language {lang!r}: choose from {', '.join(SUPPORTED)}")
    text = resources.files(__package__).joinpath("locales", f"{lang}.json").read_text(encoding="utf-8")
    messages = json.loads(text)
    for key, message in messages.items():
        if not isinstance(message, str):
            raise ValueError(f"locales/{lang}.json: {key} is not a string")
        placeholders(message)  # a malformed message fails here, not in front of a user
    return MappingProxyType(messages)


@dataclass(frozen=True, eq=False)
class Translator:
    """The messages of one language as a function: ``t("page.status.ready")``,
    ``t("report.narrative.headline.single", model=name, description=text)``."""

    lang: str
    messages: Mapping[str, str]

    def __call__(self, key: str, /, **params: object) -> str:
        """The message ``key`` with its placeholders filled; KeyError for an unknown key or a
        placeholder without a value."""
        return self.messages[key].format_map(params)

    def get(self, key: str, default: str, /, **params: object) -> str:
        """For keys built from data (``report.machine.<fact>``): ``default`` when there is none."""
        message = self.messages.get(key)
        return default if message is None else message.format_map(params)

    def plural(self, key: str, count: int, /, **params: object) -> str:
        """``KEY.one`` for a count of one, else ``KEY.other``; ``{count}`` is the count."""
        form = "one" if count == 1 else "other"
        return self(f"{key}.{form}", count=count, **params)

    def html(self, key: str, /, *, markup: Mapping[str, str] | None = None, **params: object) -> str:
        """The message as HTML: its text and every value escaped, except ``markup`` values,
        which are HTML already (a link, a <code> element) and are inserted as they are."""
        escaped = {name: html.escape(str(value), quote=True) for name, value in params.items()}
        return html.escape(self.messages[key], quote=True).format_map({**escaped, **(markup or {})})

    @property
    def decimal(self) -> str:
        """The decimal separator: "." in English, "," in Spanish."""
        return self.messages["format.decimal"]

    def localize_number(self, text: str) -> str:
        """A number already formatted the English way ("1.23 M", "0.913") with this language's
        decimal separator. Only for text that is a formatted number: it replaces every dot."""
        return text.replace(".", self.decimal)

    def number(self, value: float | None, digits: int) -> str:
        """``value`` with ``digits`` decimals ("0.913" / "0,913"); "–" for an unknown value."""
        return MISSING if value is None else self.localize_number(f"{value:.{digits}f}")

    def percent(self, fraction: float | None, digits: int) -> str:
        """A fraction as a percentage, the way the report writes it: "91.3%" / "91,3 %"."""
        if fraction is None:
            return MISSING
        return self("format.percent", value=self.number(100 * fraction, digits))

    def subset(self, prefix: str) -> dict[str, str]:
        """The messages whose keys start with ``prefix`` (what the page's script needs)."""
        return {k: v for k, v in self.messages.items() if k.startswith(prefix)}


@functools.cache
def translator(lang: str) -> Translator:
    """The translator of a supported language (ValueError for any other)."""
    return Translator(lang, catalog(lang))
