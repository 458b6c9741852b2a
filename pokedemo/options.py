"""TrainConfig's fields as options: one table, read from the field metadata in ``pokedemo.config``.

The CLI's ``train``/``compare`` options (``add_training_arguments``, ``config_from_args``), the command that
reproduces a run (``command_line``, recorded in every checkpoint as ``reproduce``) and the app's conversion of
widget values (``config_from_values``) all come from here, so a new TrainConfig field needs nothing in this file.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any, Mapping

from pokedemo.config import TrainConfig

TUNING_GROUP = ("tuning options", "Recipe details whose defaults the benchmarks chose (see BENCHMARKS.md).")


@dataclass(frozen=True)
class Option:
    """One TrainConfig field as the CLI and the app see it."""

    name: str
    kind: type  # int, float, bool or str; a field whose default is None also takes None
    default: Any
    help: str
    flag: str
    flips: bool  # a boolean whose flag sets the opposite of its default (``--scratch``)
    choices: tuple[str, ...] | None
    metavar: str | None
    app: bool
    tuning: bool

    def argparse_kwargs(self) -> dict[str, Any]:
        if self.kind is bool and self.flips:
            action = "store_false" if self.default else "store_true"
            return {"dest": self.name, "action": action, "help": self.help}
        if self.kind is bool:
            return {"dest": self.name, "action": argparse.BooleanOptionalAction, "default": self.default,
                    "help": self.help}
        kwargs = {"dest": self.name, "type": self.kind, "default": self.default, "help": self.help}
        return {**kwargs, **{k: getattr(self, k) for k in ("choices", "metavar") if getattr(self, k) is not None}}

    def words(self, value: Any) -> list[str]:
        """The command-line words that give this option ``value`` (none for its default)."""
        if value == self.default:
            return []
        if self.kind is bool:
            return [self.flag if self.flips else f"--{'' if value else 'no-'}{self.flag[2:]}"]
        return [self.flag, str(value)]

    def convert(self, value: Any) -> Any:
        """A loosely typed value (sliders send floats, API callers strings) as this field's type."""
        if value is None and self.default is None:
            return None
        if self.kind is int:
            return int(float(value))
        return self.kind(value)


def _base_type(hint: Any) -> type:
    """int for ``int | None``, etc."""
    if isinstance(hint, types.UnionType):
        return next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


@cache
def training_options() -> tuple[Option, ...]:
    """Every TrainConfig field as an Option, in field order."""
    hints = typing.get_type_hints(TrainConfig)
    options = []
    for f in dataclasses.fields(TrainConfig):
        meta = f.metadata
        options.append(Option(
            name=f.name, kind=_base_type(hints[f.name]), default=f.default,
            help=meta.get("flag_help", meta["help"]), flag=meta.get("flag", "--" + f.name.replace("_", "-")),
            flips="flag" in meta and hints[f.name] is bool, choices=meta.get("choices"),
            metavar=meta.get("metavar"), app=meta["app"], tuning=meta["tuning"],
        ))
    return tuple(options)


def app_option_names() -> tuple[str, ...]:
    """The fields the app's Train tab has a widget for."""
    return tuple(option.name for option in training_options() if option.app)


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field; the tuning ones in their own ``--help`` section."""
    tuning = parser.add_argument_group(*TUNING_GROUP)
    for option in training_options():
        (tuning if option.tuning else parser).add_argument(option.flag, **option.argparse_kwargs())


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{option.name: getattr(args, option.name) for option in training_options()})


def config_from_values(values: Mapping[str, Any]) -> TrainConfig:
    """A TrainConfig from field name → loosely typed value (the app's widgets); unset fields keep defaults."""
    by_name = {option.name: option for option in training_options()}
    unknown = set(values) - by_name.keys()
    if unknown:
        raise TypeError(f"not a training option: {', '.join(sorted(unknown))}")
    return TrainConfig(**{name: by_name[name].convert(value) for name, value in values.items()})


def command_line(config: TrainConfig, data: str, command: str = "train") -> str:
    """The ``python -m pokedemo`` command that trains with ``config`` on ``data``: the options that differ from
    the defaults of this pokedemo version (a checkpoint records it under ``versions``)."""
    words = [word for option in training_options() for word in option.words(getattr(config, option.name))]
    return shlex.join(["python", "-m", "pokedemo", command, "--data", data, *words])


def data_argument(dataset_record: Mapping[str, Any]) -> str:
    """The ``--data`` that finds a checkpoint's dataset again: its Hub address at the recorded revision, its
    path inside the project (the bundled data, from any clone), else its folder."""
    source = dataset_record.get("source") or {}
    return source.get("spec") or dataset_record.get("project_path") or str(dataset_record["root"])


def reproduce_record(config: TrainConfig, dataset_record: Mapping[str, Any]) -> dict[str, str]:
    """What a checkpoint's ``reproduce`` holds: the CLI command that trains its run again."""
    return {"command": command_line(config, data_argument(dataset_record))}
