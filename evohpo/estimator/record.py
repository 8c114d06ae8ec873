"""What a stored search was made for, so that only the same search resumes it."""

from __future__ import annotations

import functools
import hashlib
import inspect
import re
from typing import Any

import numpy as np
import numpy.typing as npt
import optuna

from evohpo.estimator.params import Settings
from evohpo.search.identity import Difference, IdentityCheck

__all__ = ["SEARCH_ATTR", "check_resumable", "search_record"]

#: Study user attribute recording what a stored search optimised.
SEARCH_ATTR = "evohpo.search"

#: Record keys added after studies were first stored: compared only when the stored
#: record has them, so that a study stored before still resumes.
_ADDED_KEYS = ("sampler", "pruner", "inherit_weights")


def search_record(
    settings: Settings,
    classes: npt.NDArray[Any] | None,
    X: npt.NDArray[np.float64],
    y: npt.NDArray[Any],
    root: int,
) -> dict[str, Any]:
    """What makes stored trials comparable: a resumed study must match it.

    ``classes`` is ``None`` for regression, whose record holds the task and
    the number of targets instead. ``input_shape`` (and the task) are
    recorded only when set, so that dense classification searches stored
    before they existed keep their record and resume.
    """
    record: dict[str, Any] = {
        "estimator": settings.owner,
        "scoring": _describe_scoring(settings.scoring),
        "space": settings.space.to_dict(),
    }
    if classes is None:
        record["task"] = settings.task
        record["n_targets"] = int(y.shape[1])
    else:
        record["n_classes"] = len(classes)
    record |= {
        "n_features": int(X.shape[1]),
        "validation": settings.describe_validation(),
        "training": {"max_epochs": settings.max_epochs, "patience": settings.patience},
        "seed": root,
        "data": _fingerprint(X, y, classes),
        "sampler": describe_component(settings.sampler),
        "pruner": describe_component(settings.pruner),
        # Children trained from their parents' weights learn otherwise than from fresh ones.
        "inherit_weights": settings.inherit_weights,
    }
    if settings.input_shape is not None:
        record["input_shape"] = list(settings.input_shape)
    return record


def check_resumable(study: optuna.Study, record: dict[str, Any]) -> None:
    """Raise if a stored study was made for another search; label one that is still empty.

    Raises
    ------
    StudyMismatchError
        If the study minimizes, holds trials of another origin, or its record
        differs from ``record`` (every key but ``"estimator"``).
    """
    subject = f"The stored study {study.study_name!r}"
    if not _identity(str(record["estimator"])).check_study(study, record, subject=subject):
        study.set_user_attr(SEARCH_ATTR, record)


def describe_component(component: Any) -> Any:
    """A sampler or pruner as a resumed study recognises it.

    The estimator's name for it (``"ga"``) as it is; an object as its class and
    the settings it was built with: an :class:`~evohpo.EvoSampler`'s
    :meth:`~evohpo.EvoSampler.settings`, else each argument of its class's
    constructor that it keeps as a plain value under the argument's name
    (``_name`` or ``name``), as Optuna's samplers and pruners do. The seed is
    left out: the record holds the search's own.

    Examples
    --------
    >>> import optuna
    >>> describe_component(optuna.pruners.MedianPruner(n_warmup_steps=3))["n_warmup_steps"]
    3
    """
    if component is None or isinstance(component, str):
        return component
    from evohpo.evolution.sampler import EvoSampler

    cls = type(component)
    described: dict[str, Any] = {"class": f"{cls.__module__}.{cls.__qualname__}"}
    if isinstance(component, EvoSampler):
        settings = component.settings()
        settings.pop("seed")
        return described | settings
    attributes = vars(component)
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if name in ("self", "seed") or parameter.kind in (
            parameter.VAR_POSITIONAL,
            parameter.VAR_KEYWORD,
        ):
            continue
        for attribute in (f"_{name}", name):
            value = attributes.get(attribute)
            plain = value is None or isinstance(value, (bool, int, float, str))
            if plain and attribute in attributes:
                described[name] = value
                break
    return described


def _describe_scoring(scoring: Any) -> str:
    """How a resumed study recognises its scoring, in any process."""
    if isinstance(scoring, str):
        return scoring
    module = getattr(scoring, "__module__", None)
    name = getattr(scoring, "__qualname__", None)
    if module is not None and name is not None:
        return f"{module}.{name}"
    # Scorer objects (make_scorer) describe themselves; drop memory addresses.
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(scoring))


def _fingerprint(
    X: npt.NDArray[np.float64], y: npt.NDArray[Any], classes: npt.NDArray[Any] | None
) -> str:
    """A digest of the data, so that a study is resumed only on the data it searched."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(X.shape).encode())
    digest.update(np.ascontiguousarray(X, dtype=np.float64).tobytes())
    if classes is None:  # regression targets
        digest.update(repr(y.shape).encode())
        digest.update(np.ascontiguousarray(y, dtype=np.float64).tobytes())
    else:
        digest.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
        digest.update(repr(classes.tolist()).encode())
    return digest.hexdigest()


def _describe(difference: Difference) -> str:
    key, stored, now = difference.key, difference.stored, difference.now
    if key == "data":
        return "data: the rows of X or y differ from those the study searched"
    if key == "seed":
        return f"seed: stored {stored!r}, now {now!r} (random_state; None keeps the stored one)"
    return f"{key}: stored {stored!r}, now {now!r}"


@functools.cache
def _identity(owner: str) -> IdentityCheck:
    """How a stored search is recognised, and the messages (naming ``owner``) that
    refuse another one."""
    return IdentityCheck(
        attr=SEARCH_ATTR,
        direction=f"{{study}} minimizes; {owner} maximizes its score. Choose another study_name.",
        foreign=f"{{study}} holds trials that {owner} did not make. Choose another study_name.",
        different="{study} was made for another search ({details}). Resume it with the same "
        "settings and data, or choose another study_name.",
        ignore=("estimator",),
        depth=1,
        describe=_describe,
        added=_ADDED_KEYS,
    )
