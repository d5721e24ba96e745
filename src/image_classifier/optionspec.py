"""Options declared once: each option of a command is a dataclass field whose metadata holds its
help, its command-line spelling and its own check; the parser, the Python keywords, the checks and
the command line that redoes a run are derived from that one declaration.

The Python keyword is the option's name with dashes turned into underscores (``--cache-dir`` is
``cache_dir=``); a switch that defaults to True is spelled ``--no-NAME`` (``--no-audit`` is
``audit=False``). Standard library only: ``--help`` is built from these declarations without
loading torch.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from image_classifier.errors import OptionError, UnknownOptionError
from image_classifier.fileio import default_cache_dir

#: The share of known images the "none of these" rule keeps when nothing says otherwise (``--keep``).
DEFAULT_KEEP = 0.95
#: What ``--device`` accepts (``image_classifier.device.DEVICE_CHOICES``, spelled here without importing torch).
DEVICE_METAVAR = "{auto,cpu,cuda,cuda:N}"
DEVICE_HELP = ("where the network computes: auto (default): the first CUDA GPU when PyTorch sees one, else the "
               "CPU; cpu; cuda or cuda:N: that GPU (an error when there is none)")
#: ``--keep`` where a model answers (predict, sort, serve).
KEEP_HELP = ("where the \"none of these\" threshold sits, as the share of the known people's photos it keeps "
             "(measured on the validation photos; a face model's on its training photos too, each left out of the "
             f"model) (default: the model's own, {DEFAULT_KEEP} unless trained with another). Lower answers "
             "\"unknown\" more often: fewer strangers accepted, fewer of your own photos named. What it trades is "
             "printed beside it. Nothing is refitted.")
#: A field's type (as written) -> how its command-line text becomes a value.
_PARSERS: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "Path": Path, "os.PathLike": Path}


def cache_option(**spec: Any) -> Any:
    """``--no-cache`` (``cache=False``) of every command that reads photos: one cache root holds the
    decoded images, the faces and the frozen features, each keyed by the file's content."""
    return option(True, help="write and read no cache files: every photo is decoded and analysed again", **spec)


def cache_dir_option(**spec: Any) -> Any:
    """``--cache-dir`` of every command that reads photos (see :func:`cache_option`)."""
    return option(None, metavar="DIR", parse=str, help="where what is computed from each photo is cached, by its "
                  "content (default: $IMAGE_CLASSIFIER_CACHE_DIR or ~/.cache/image-classifier/decoded)", **spec)


def cache_root(cache: bool, cache_dir: str | os.PathLike | None) -> Path | None:
    """Where the caches live: ``cache_dir`` or the default root; None with ``cache=False``."""
    return Path(cache_dir or default_cache_dir()) if cache else None


def check_keep(keep: Any) -> float:
    """``keep`` as a float when 0 < keep < 1: the one check of ``--keep``, ``keep=`` and ``?keep=``."""
    try:
        value = float(keep)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 < value < 1.0:  # NaN fails too; said as the number it is read as ("0" and 0.0 alike)
        raise OptionError(f"--keep must be between 0 and 1 (the fraction of known images kept, "
                          f"e.g. 0.9), not {keep if value != value else value}")
    return value


def keep_argument(text: str) -> float:
    """``--keep`` on the command line: :func:`check_keep`'s message as argparse's, before anything loads."""
    try:
        return check_keep(text)
    except OptionError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def at_least_one(name: str) -> Callable[[Any], int]:
    """The check of a count: an int of at least 1, else an OptionError naming ``name``."""
    def check(value: Any) -> int:
        if int(value) < 1:
            raise OptionError(f"{name} must be at least 1, not {value}")
        return int(value)
    return check


def above_zero(name: str) -> Callable[[Any], float]:
    """The check of a size or a tolerance: a number above 0, else an OptionError naming ``name``."""
    def check(value: Any) -> float:
        if not float(value) > 0:  # NaN fails too
            raise OptionError(f"{name} must be above 0, not {value}")
        return float(value)
    return check


def one_of(name: str, allowed: tuple[str, ...]) -> Callable[[Any], str]:
    """The check of a choice: one of ``allowed``, else an OptionError naming ``name`` and the choices."""
    def check(value: Any) -> str:
        if value not in allowed:
            raise OptionError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
        return value
    return check


def parse_arch_path(text: str, *, flag: str = "--weights") -> tuple[str | None, Path]:
    """``ARCH=PATH`` -> (ARCH, PATH); a plain ``PATH`` (or an existing file whose name holds ``=``)
    -> (None, PATH). ``ARCH=`` or ``=PATH`` is an error naming ``flag``."""
    arch, sep, path = text.partition("=")
    if not sep or Path(text).exists():
        return None, Path(text)
    if not arch.strip() or not path:
        raise OptionError(f"{flag} {text!r}: write ARCH=PATH, e.g. resnet50=weights/resnet50.pth")
    return arch.strip(), Path(path)


@dataclass(frozen=True)
class Spec:
    """How one option is explained, spelled and checked (a field's ``metadata["option"]``)."""

    help: str
    metavar: str | tuple[str, ...] | None = None
    #: Values the option takes at once (``--merge A B``: 2); the field holds them as a tuple.
    nargs: int | None = None
    #: Command-line text -> value (default: from the field's type: int, float, Path, else the text).
    parse: Callable[[str], Any] | None = None
    #: A repeatable option: its texts -> the value; ``show`` writes a value back as texts.
    repeat: Callable[[list[str]], Any] | None = None
    show: Callable[[Any], list[str]] | None = None
    #: value -> the checked value, or an OptionError saying what to do (the same for Python and the CLI).
    check: Callable[[Any], Any] | None = None
    #: The values allowed (argparse's choices; the check when there is no other).
    choices: tuple[str, ...] | None = None
    #: Several exclusive switches setting one field: {flag: (value, help)}.
    switches: Mapping[str, tuple[Any, str]] | None = None
    positional: bool = False
    #: False: a Python-only option.
    cli: bool = True
    #: False: left out of the command line that redoes a run (it changes how a run goes, not what it gives).
    reproduce: bool = True
    #: Written in that command line even at its default.
    always: bool = False
    #: The option's earlier Python name, named in the error when it is still used.
    was: str | None = None


def option(default: Any = MISSING, *, factory: Any = MISSING, **spec: Any) -> Any:
    """A dataclass field declaring one option (``spec``: the :class:`Spec` fields)."""
    return field(default=default, default_factory=factory, metadata={"option": Spec(**spec)})


def options_of(cls: type) -> list[tuple[Field, Spec]]:
    return [(f, f.metadata["option"]) for f in fields(cls) if "option" in f.metadata]


def flag_of(f: Field, spec: Spec) -> str:
    """``--name-with-dashes``; ``--no-name`` for a switch that defaults to True."""
    return f.name if spec.positional else ("--no-" if f.default is True else "--") + f.name.replace("_", "-")


def _dest(f: Field, spec: Spec) -> str:
    return f.name if spec.positional or spec.switches else flag_of(f, spec).lstrip("-").replace("-", "_")


def _parse(f: Field, spec: Spec) -> Callable[[str], Any]:
    if spec.parse is not None:
        return spec.parse
    written = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
    return next((_PARSERS[t.strip()] for t in written.split("|") if t.strip() in _PARSERS), str)


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One argument per command-line option of ``cls``, in declaration order."""
    for f, spec in options_of(cls):
        if not spec.cli:
            continue
        if spec.switches:
            group = parser.add_mutually_exclusive_group()
            for name, (value, text) in spec.switches.items():
                group.add_argument(name, dest=f.name, action="store_const", const=value, default=f.default, help=text)
        elif spec.positional:
            parser.add_argument(f.name, type=_parse(f, spec), metavar=spec.metavar, help=spec.help)
        elif isinstance(f.default, bool):
            parser.add_argument(flag_of(f, spec), dest=_dest(f, spec), action="store_true", help=spec.help)
        elif spec.repeat is not None:
            parser.add_argument(flag_of(f, spec), dest=_dest(f, spec), action="append", default=[],
                                metavar=spec.metavar, help=spec.help)
        else:
            parser.add_argument(flag_of(f, spec), dest=_dest(f, spec), type=_parse(f, spec), metavar=spec.metavar,
                                nargs=spec.nargs, choices=spec.choices,
                                required=f.default is MISSING and f.default_factory is MISSING,
                                default=None if f.default is MISSING else f.default, help=spec.help)


def from_args(cls: type, args: argparse.Namespace, **given: Any) -> Any:
    """``cls`` made from parsed command-line arguments (``given`` wins: values the CLI works out itself)."""
    values: dict[str, Any] = {}
    for f, spec in options_of(cls):
        if spec.cli and f.name not in given:
            value = getattr(args, _dest(f, spec))
            if spec.repeat is not None:
                value = spec.repeat(value)
            elif spec.nargs is not None and value is not None:
                value = tuple(value)
            elif f.default is True and not spec.switches:
                value = not value  # --no-NAME
            values[f.name] = value
    return cls(**values, **given)


def build(cls: type, what: str, options: Mapping[str, Any]) -> Any:
    """``cls(**options)`` as the Python API takes them; a misspelt or renamed name is an
    :class:`UnknownOptionError` (a ``TypeError`` and an ``OptionError``) listing the valid ones."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        renamed = {spec.was: f.name for f, spec in options_of(cls) if spec.was}
        named = [f"{n} (now {renamed[n]})" if n in renamed else n for n in unknown]
        raise UnknownOptionError(f"unknown {what} option(s) {', '.join(named)}; the options are "
                                 f"{', '.join(sorted(known))}")
    return cls(**options)


def check_options(obj: Any) -> dict[str, Any]:
    """Each option's own check applied to its value (None is left alone): {name: checked value};
    the first that cannot work raises its OptionError."""
    checks = {f.name: spec.check or (one_of(flag_of(f, spec), spec.choices) if spec.choices else None)
              for f, spec in options_of(type(obj))}
    return {name: check(getattr(obj, name)) for name, check in checks.items()
            if check is not None and getattr(obj, name) is not None}


def command_line(obj: Any) -> list[str]:
    """The command-line arguments that give ``obj`` back: every option that differs from its
    default (and those written ``always``), in declaration order."""
    args: list[str] = []
    for f, spec in options_of(type(obj)):
        if not (spec.cli and spec.reproduce) or spec.switches:
            continue
        value, default = getattr(obj, f.name), f.default_factory() if f.default_factory is not MISSING else f.default
        if value == default and not spec.always:
            continue
        if spec.positional:
            args.append(os.fspath(value))
        elif isinstance(f.default, bool):
            args.append(flag_of(f, spec))
        elif spec.nargs is not None:  # one flag, its values after it
            args += [flag_of(f, spec), *(spec.show(value) if spec.show is not None else map(str, value))]
        else:
            texts = spec.show(value) if spec.show is not None else [str(value)]
            args += [part for text in texts for part in (flag_of(f, spec), text)]
    return args
