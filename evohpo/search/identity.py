"""Study identity: the record of what a stored study's trials were made for, and its check.

A search that keeps its study in a storage writes an identity record (a JSON
object: data, search space, training, sampler, ...) as a study user attribute
under a key of its own. Before it adds trials to a stored study it compares
that record with its own: a study made for another search is refused with
:class:`~evohpo.exceptions.StudyMismatchError`, which names every difference,
and nothing is written. Study files and :class:`~evohpo.EvoSearchClassifier`
differ only in their attribute, their wording and what they leave out of the
comparison, which one :class:`IdentityCheck` per caller holds.

Usage::

    CHECK = IdentityCheck(
        attr="my.search",
        direction="{study} has the direction(s) [{directions}]; searches maximize.",
        foreign="{study} holds trials without a {attr!r} record.",
        different="{study} was made for another search ({keys}): {details}.",
    )
    if not CHECK.check(storage, study_id, record, subject="The study 'x'"):
        storage.set_study_user_attr(study_id, CHECK.attr, record)  # empty: label it

:meth:`IdentityCheck.check_study` does the same for an :class:`optuna.Study`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from optuna.study import StudyDirection

from evohpo.exceptions import StudyMismatchError

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage

__all__ = [
    "UNSET",
    "Difference",
    "IdentityCheck",
    "describe_difference",
    "find_differences",
    "normalise",
    "show",
]


class _Unset:
    """A key that one side of an identity lacks."""

    def __repr__(self) -> str:
        return "(not set)"


#: Stands for a key one record lacks, in :class:`Difference`.
UNSET: Any = _Unset()


@dataclass(frozen=True)
class Difference:
    """One setting in which a stored record and the expected one differ.

    Attributes
    ----------
    key : str
        Dotted path of the setting (``"train.max_epochs"``).
    stored, now : object
        The values, JSON-normalised; :data:`UNSET` where a record lacks the key.
    """

    key: str
    stored: Any
    now: Any

    @property
    def top(self) -> str:
        """The top-level key (``"train"``)."""
        return self.key.split(".", 1)[0]


def normalise(value: Any) -> Any:
    """``value`` as it comes back from storage: through JSON (tuples read as lists).

    Examples
    --------
    >>> normalise({"b": (1, 2), "a": 1.0})
    {'a': 1.0, 'b': [1, 2]}
    """
    return json.loads(json.dumps(value, sort_keys=True))


def show(value: Any, limit: int = 200) -> str:
    """``value`` as JSON, cut to ``limit`` characters.

    Examples
    --------
    >>> show([4, 16]), show(UNSET)
    ('[4, 16]', '(not set)')
    """
    if isinstance(value, _Unset):
        return repr(value)
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_difference(difference: Difference) -> str:
    """``train.max_epochs: stored 2, now 3``, the values as JSON."""
    return f"{difference.key}: stored {show(difference.stored)}, now {show(difference.now)}"


def find_differences(
    stored: Mapping[str, Any],
    expected: Mapping[str, Any],
    *,
    ignore: Sequence[str] = (),
    depth: int | None = None,
) -> list[Difference]:
    """Every setting of ``expected`` that ``stored`` does not match, in ``expected``'s order.

    Both records are compared JSON-normalised. Top-level keys only ``stored``
    has are not compared (a newer record may hold more); below the top level
    a key on either side only is a difference.

    Parameters
    ----------
    stored, expected : mapping
        Identity records.
    ignore : sequence of str
        Top-level keys not compared.
    depth : int or None
        ``1`` compares top-level values as wholes; ``None`` lists every leaf.

    Examples
    --------
    >>> found = find_differences({"a": {"x": 1, "y": 2}}, {"a": {"x": 1, "y": 3}})
    >>> [describe_difference(d) for d in found]
    ['a.y: stored 2, now 3']
    """
    stored, expected = normalise(stored), normalise(expected)
    return [
        difference
        for key in expected
        if key not in ignore
        for difference in _leaves(stored.get(key, UNSET), expected[key], key, depth, 1)
    ]


def _leaves(
    stored: Any, expected: Any, path: str, depth: int | None, level: int
) -> list[Difference]:
    deeper = depth is None or level < depth
    if deeper and isinstance(stored, Mapping) and isinstance(expected, Mapping):
        found: list[Difference] = []
        for key in [*expected, *(k for k in stored if k not in expected)]:
            sub = f"{path}.{key}"
            found.extend(
                _leaves(stored.get(key, UNSET), expected.get(key, UNSET), sub, depth, level + 1)
            )
        return found
    return [] if stored == expected else [Difference(path, stored, expected)]


@dataclass(frozen=True)
class IdentityCheck:
    """How one kind of search records its identity and refuses a study of another.

    The messages are format strings; each gets ``{study}`` (the ``subject``
    of the check, e.g. ``"The study 'digits/ga/seed0' in 'evohpo.db'"``),
    ``direction`` also ``{directions}`` (e.g. ``minimize``), ``foreign`` also
    ``{attr}``, ``different`` also ``{keys}`` (the top-level keys that differ)
    and ``{details}`` (each difference, ``"; "``-separated).

    Attributes
    ----------
    attr : str
        Study user attribute that holds the record.
    direction : str
        The study does not maximize.
    foreign : str
        The study holds trials but no record.
    different : str
        The records differ.
    unreadable : str
        The stored record is not a JSON object.
    ignore : tuple of str
        Top-level keys left out of the comparison (a version, the owner's name).
    depth : int or None
        See :func:`find_differences`.
    canonical : callable, optional
        Applied to both normalised records before they are compared, e.g. to
        drop settings that older records carried.
    describe : callable
        One :class:`Difference` as text.
    limit : int or None
        Differences listed at most; the rest are counted.
    added : tuple of str
        Top-level keys records gained after studies were stored: compared only
        when the stored record has them, so that an older study still resumes.
    """

    attr: str
    direction: str
    foreign: str
    different: str
    unreadable: str = "{study} has an unreadable identity."
    ignore: tuple[str, ...] = ()
    depth: int | None = None
    canonical: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    describe: Callable[[Difference], str] = describe_difference
    limit: int | None = None
    added: tuple[str, ...] = ()

    def differences(
        self, stored: Mapping[str, Any], expected: Mapping[str, Any]
    ) -> list[Difference]:
        """What :meth:`check` would list for these two records."""
        old: dict[str, Any] = normalise(stored)
        new: dict[str, Any] = normalise(expected)
        if self.canonical is not None:
            old, new = self.canonical(old), self.canonical(new)
        new = {key: value for key, value in new.items() if key in old or key not in self.added}
        return find_differences(old, new, ignore=self.ignore, depth=self.depth)

    def check(
        self, storage: BaseStorage, study_id: int, expected: Mapping[str, Any], *, subject: str
    ) -> bool:
        """Raise if the stored study differs; return whether it carries a record.

        ``False`` means an empty study without a record: the caller labels it.
        Nothing is written.

        Raises
        ------
        StudyMismatchError
            If the study does not maximize a single objective, holds trials but
            no record, or its record differs from ``expected``.
        """
        return self._verdict(
            storage.get_study_directions(study_id),
            storage.get_study_user_attrs(study_id).get(self.attr),
            lambda: bool(storage.get_all_trials(study_id, deepcopy=False)),
            expected,
            subject,
        )

    def check_study(
        self, study: optuna.Study, expected: Mapping[str, Any], *, subject: str
    ) -> bool:
        """:meth:`check` for a loaded :class:`optuna.Study`."""
        return self._verdict(
            study.directions,
            study.user_attrs.get(self.attr),
            lambda: bool(study.get_trials(deepcopy=False)),
            expected,
            subject,
        )

    def _verdict(
        self,
        directions: Sequence[StudyDirection],
        stored: Any,
        has_trials: Callable[[], bool],
        expected: Mapping[str, Any],
        subject: str,
    ) -> bool:
        if list(directions) != [StudyDirection.MAXIMIZE]:
            shown = ", ".join(d.name.lower() for d in directions)
            raise StudyMismatchError(self.direction.format(study=subject, directions=shown))
        if stored is None:
            if has_trials():
                raise StudyMismatchError(self.foreign.format(study=subject, attr=self.attr))
            return False
        if not isinstance(stored, Mapping):
            raise StudyMismatchError(self.unreadable.format(study=subject))
        found = self.differences(stored, expected)
        if found:
            keys = ", ".join(dict.fromkeys(d.top for d in found))
            listed = found if self.limit is None else found[: self.limit]
            details = "; ".join(self.describe(d) for d in listed)
            if len(found) > len(listed):
                details += f"; and {len(found) - len(listed)} more"
            raise StudyMismatchError(
                self.different.format(study=subject, keys=keys, details=details)
            )
        return True
