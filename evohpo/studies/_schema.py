"""The keys a study file may set and the checks of their values.

Every check raises :class:`~evohpo.exceptions.StudyConfigError` with one
template: the file, the table, the key, what it must be and what it is, and
a "Did you mean ...?" hint for a near miss.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from evohpo.exceptions import InvalidParameterError, StudyConfigError
from evohpo.search.samplers import pruner_class, sampler_class

if TYPE_CHECKING:
    from evohpo.evolution.mutation import MutationRates

__all__ = [
    "BUDGET_KEYS",
    "COMPARE_KEYS",
    "DATA_KEYS",
    "TOP_KEYS",
    "TRAIN_KEYS",
    "batch_trials",
    "boolean",
    "check_keys",
    "check_pruner_keys",
    "check_sampler_keys",
    "check_train",
    "config_error",
    "did_you_mean",
    "fraction",
    "get_table",
    "integer",
    "mutation_rates",
    "number",
    "positive",
    "sampler_arguments",
]

#: Top-level keys of a study file.
TOP_KEYS = (
    "name",
    "description",
    "task",
    "storage",
    "data",
    "space",
    "train",
    "pruner",
    "budget",
    "compare",
    "sampler",
)
DATA_KEYS = (
    "dataset",
    "test_fraction",
    "validation_fraction",
    "split_seed",
    "root",
    "image_size",
    "grayscale",
    "download",
    "path",
    "target",
    "features",
    "delimiter",
)
#: ``[train]``: :class:`~evohpo.training.config.TrainConfig`'s settings, ``batch_trials``
#: and the weight-inheritance settings.
TRAIN_KEYS = (
    "max_epochs",
    "patience",
    "min_delta",
    "device",
    "eval_batch_size",
    "max_train_time",
    "batch_trials",
    "inherit_weights",
    "weights_dir",
)
BUDGET_KEYS = ("n_trials", "timeout")
COMPARE_KEYS = ("samplers", "seeds", "target")

#: Sampler settings evohpo sets itself, so a study file may not.
_SAMPLER_OWN_KEYS: dict[str, str] = {
    "seed": "it comes from [compare] seeds or --seed",
    "search_space": "it is the study file's [space]",
}
#: Sampler settings that take a Python function, which TOML cannot hold.
_FUNCTION_KEYS = ("gamma", "weights", "constraints_func")


def config_error(
    source: str, table: str, key: str, expected: str, got: Any, *, hint: str = ""
) -> NoReturn:
    """Raise ``<source>: [table] 'key' must be <expected>. Got <got> instead.<hint>``."""
    where = f"[{table}] " if table else ""
    raise StudyConfigError(
        f"{source}: {where}{key!r} must be {expected}. Got {got!r} instead.{hint}"
    )


def did_you_mean(word: Any, known: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the closest of ``known``, or ``""``."""
    close = difflib.get_close_matches(str(word), list(known), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def get_table(
    data: Mapping[str, Any], key: str, source: str, *, required: bool = False, prefix: str = ""
) -> Mapping[str, Any]:
    """The table ``[prefix key]`` of ``data``; empty when absent and not ``required``."""
    value = data.get(key)
    if value is None:
        if required:
            raise StudyConfigError(f"{source}: the table [{prefix}{key}] is missing.")
        return {}
    if not isinstance(value, Mapping):
        raise StudyConfigError(
            f"{source}: {prefix}{key} must be a table ([{prefix}{key}]). Got {value!r} instead."
        )
    return value


def check_keys(
    data: Mapping[str, Any], known: Sequence[str] | None, table: str, source: str
) -> None:
    """Refuse a key of ``data`` outside ``known`` (``None``: anything goes)."""
    if known is None:  # the class takes **kwargs: let it check them
        return
    for key in data:
        if key not in known:
            where = f"[{table}]" if table else "the top level"
            hint = did_you_mean(key, known)
            raise StudyConfigError(
                f"{source}: unknown setting {key!r} in {where}; the settings are "
                f"{sorted(known)}.{hint}"
            )


def integer(value: Any, key: str, table: str, source: str, *, low: int | None = None) -> int:
    """``value`` as an int (not a bool), at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        config_error(
            source, table, key, "an int" + (f" >= {low}" if low is not None else ""), value
        )
    return int(value)


def boolean(value: Any, key: str, table: str, source: str) -> bool:
    """``value`` if it is ``true`` or ``false`` (not 0 or 1)."""
    if not isinstance(value, bool):
        config_error(source, table, key, "true or false", value)
    return value


def number(value: Any, key: str, table: str, source: str, *, low: float) -> float:
    """``value`` as a finite float >= ``low`` (not a bool)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < low
    ):
        config_error(source, table, key, f"a number >= {low}", value)
    return float(value)


def positive(value: Any, key: str, table: str, source: str) -> float:
    """``value`` as a finite float > 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        config_error(source, table, key, "a number > 0", value)
    return float(value)


def batch_trials(value: Any, table: str, source: str) -> int | Literal["auto"]:
    """``value`` as the ``batch_trials`` setting: an int >= 1 (not a bool) or ``"auto"``."""
    if isinstance(value, str) and value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        config_error(source, table, "batch_trials", "an int >= 1 or 'auto'", value)
    return int(value)


def fraction(value: Any, key: str, table: str, source: str, *, allow_one: bool = False) -> float:
    """``value`` as a float in (0, 1), or (0, 1] with ``allow_one``."""
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and 0 < value < 1 + (1e-12 if allow_one else 0)
        and (allow_one or value < 1)
    )
    if not ok:
        config_error(
            source, table, key, "a number in (0, 1]" if allow_one else "a number in (0, 1)", value
        )
    return float(value)


def _keyword_names(cls: Any) -> list[str] | None:
    """Keyword parameters of ``cls``'s constructor; ``None`` if it takes ``**kwargs``."""
    parameters = inspect.signature(cls).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in parameters if p.kind in keyword]


def check_pruner_keys(pruner: Mapping[str, Any], source: str) -> None:
    """Refuse settings of ``[pruner]`` that its class does not take."""
    known = _keyword_names(pruner_class(pruner["name"]))
    check_keys(pruner, None if known is None else ["name", *known], "pruner", source)


def _int_or_auto(value: Any, key: str, table: str, source: str) -> int | str:
    if value == "auto" and isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        config_error(source, table, key, "an int >= 1 or 'auto'", value)
    return int(value)


def _percentile(value: Any, key: str, table: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        config_error(source, table, key, "a number in [0, 100]", value)
    return float(value)


_COUNTS = {
    "n_startup_trials": functools.partial(integer, low=0),
    "n_warmup_steps": functools.partial(integer, low=0),
    "interval_steps": functools.partial(integer, low=1),
    "n_min_trials": functools.partial(integer, low=1),
}
#: What each setting of Optuna's pruners must be. Optuna checks few of them when the
#: pruner is built: a string count fails every trial once pruning starts, after the
#: study stored it in its identity.
_OPTUNA_PRUNER_SETTINGS: dict[str, dict[str, Callable[[Any, str, str, str], Any]]] = {
    "none": {},
    "median": dict(_COUNTS),
    "percentile": {"percentile": _percentile, **_COUNTS},
    "successive_halving": {
        "min_resource": _int_or_auto,
        "reduction_factor": functools.partial(integer, low=2),
        "min_early_stopping_rate": functools.partial(integer, low=0),
        "bootstrap_count": functools.partial(integer, low=0),
    },
    "hyperband": {
        "min_resource": functools.partial(integer, low=1),
        "max_resource": _int_or_auto,
        "reduction_factor": functools.partial(integer, low=2),
        "bootstrap_count": functools.partial(integer, low=0),
    },
}


def check_pruner_values(pruner: Mapping[str, Any], source: str) -> None:
    """Refuse a ``[pruner]`` setting of the wrong type or range, naming it (keys already
    checked by :func:`check_pruner_keys`)."""
    settable = _OPTUNA_PRUNER_SETTINGS.get(pruner["name"], {})
    for key, value in pruner.items():
        check = settable.get(key)
        if check is not None:
            check(value, key, "pruner", source)


def check_sampler_keys(name: str, options: Mapping[str, Any], source: str) -> None:
    """Refuse unknown settings in ``[sampler.<name>]`` with a hint before building it."""
    where = f"sampler.{name}"
    for key, why in _SAMPLER_OWN_KEYS.items():
        if key in options:
            raise StudyConfigError(f"{source}: [{where}] cannot set {key!r}: {why}.")
    known = _keyword_names(sampler_class(name))
    if known is None:
        return
    known = [k for k in known if k not in _SAMPLER_OWN_KEYS]
    if not known and options:
        raise StudyConfigError(f"{source}: [{where}] takes no settings; it has {sorted(options)}.")
    check_keys(options, known, where, source)


#: What each setting of Optuna's samplers must be. Optuna checks none of them when the
#: sampler is built: a wrong type or range would fail every trial, after the study
#: stored it in its identity. A setting of the class missing here (a Python function,
#: or one added by a later Optuna) cannot be set from a study file.
_OPTUNA_SAMPLER_SETTINGS: dict[str, dict[str, Callable[[Any, str, str, str], Any]]] = {
    "tpe": {
        "n_startup_trials": functools.partial(integer, low=0),
        "n_ei_candidates": functools.partial(integer, low=1),
        "multivariate": boolean,
        "group": boolean,
        "constant_liar": boolean,
        # Deprecated by Optuna 4.x, still taken (with a FutureWarning).
        "consider_prior": boolean,
        "prior_weight": functools.partial(number, low=0),
        "consider_magic_clip": boolean,
        "consider_endpoints": boolean,
        "warn_independent_sampling": boolean,
    },
    "random": {},
}


def sampler_arguments(name: str, options: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The keyword arguments of ``[sampler.<name>]``'s class, checked.

    Unknown settings are refused with a hint. evohpo's GA checks its own
    arguments when built; those of Optuna's samplers are checked here, each
    against :data:`_OPTUNA_SAMPLER_SETTINGS`. A ``[sampler.ga.mutation_rates]``
    table becomes the :class:`~evohpo.evolution.mutation.MutationRates` the
    GA takes.
    """
    check_sampler_keys(name, options, source)
    arguments = dict(options)
    settable = _OPTUNA_SAMPLER_SETTINGS.get(name)
    if settable is not None:
        where = f"sampler.{name}"
        for key, value in options.items():
            if key not in settable:
                why = (
                    "it takes a Python function, which TOML cannot hold"
                    if key in _FUNCTION_KEYS
                    else "evohpo does not know what it accepts"
                )
                raise StudyConfigError(
                    f"{source}: [{where}] cannot set {key!r} from a study file: {why}. "
                    f"The settings it may set are {sorted(settable)}."
                )
            settable[key](value, key, where, source)
    if name == "ga" and "mutation_rates" in arguments:
        arguments["mutation_rates"] = mutation_rates(arguments["mutation_rates"], source)
    return arguments


def mutation_rates(value: Any, source: str) -> MutationRates:
    """``[sampler.ga.mutation_rates]``, a table of :class:`MutationRates`' fields, as one."""
    from evohpo.evolution.mutation import MutationRates  # DEAP: only when a GA is built

    where = "sampler.ga.mutation_rates"
    if not isinstance(value, Mapping):
        config_error(source, "sampler.ga", "mutation_rates", f"a table of rates ([{where}])", value)
    check_keys(value, [f.name for f in dataclasses.fields(MutationRates)], where, source)
    try:
        return MutationRates(**value)
    except InvalidParameterError as exc:
        raise StudyConfigError(f"{source}: [{where}]: {exc}") from exc


def check_train(train: Mapping[str, Any], source: str, *, check_device: bool = True) -> None:
    """Check ``[train]`` as :class:`~evohpo.training.config.TrainConfig` does, and its device."""
    from evohpo.training.config import TrainConfig

    try:
        config = TrainConfig(**train)
    except InvalidParameterError as exc:
        raise StudyConfigError(f"{source}: [train]: {exc}") from exc
    if check_device:
        # Caught here, a device this machine lacks cannot reach the storage as a failed trial.
        from evohpo.training.nn import resolve_device  # imports torch: only when a file is loaded

        try:
            resolve_device(config.device)
        except InvalidParameterError as exc:
            # resolve_device's "The 'device' parameter of resolve_device must be ...",
            # reworded as every other study-file setting is.
            reason = re.sub(r"^The 'device' parameter of \w+ (must be )", r"\1", str(exc))
            raise StudyConfigError(
                f"{source}: [train] 'device' {reason} Use 'auto' (CUDA when available, else "
                "the CPU) or 'cpu': the device is not part of a study's identity, so a study "
                "resumes on any device."
            ) from exc
