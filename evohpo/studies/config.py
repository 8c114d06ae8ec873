"""Study files: the TOML experiment description and its parsed form.

A study file declares an experiment: the data set and its splits, the search
space, the training settings, the budget of every study, the samplers to
compare and their seeds. Each (sampler, seed) pair is one Optuna study (see
:mod:`evohpo.studies.group`).

Budgets are totals: a study that holds 7 finished trials of a 10-trial
budget runs 3 more, and a timeout counts the training time already spent.

``[train]`` holds the keyword arguments of
:class:`~evohpo.training.config.TrainConfig` and one more setting,
``batch_trials``: how many trials are asked and trained together (their dense
networks as one stack, see :func:`evohpo.search.batched.optimize`), an int
>= 1 or ``"auto"`` (the default: 8 on the CPU, 16 on CUDA, at most the GA's
``population_size`` and the trials to run; see
:mod:`evohpo.search.batch_size`). ``evohpo run``, ``worker`` and ``compare``
take ``--batch-trials`` to override it. Like ``device`` and
``eval_batch_size``, it is not part of a study's identity: a study resumes
with another ``batch_trials``.

``task = "regression"`` (top level) searches networks for numeric targets
(:mod:`evohpo.training.task`): mean squared error training, trials scored by
validation R2, test R2 reported; the data set must have numeric targets
(``"diabetes"``, ``"friedman1"``), and is then regression by default, or be
a CSV file (``dataset = "csv"``) whose target column holds numbers.

``[train] inherit_weights = true`` starts GA children from their parents'
trained weights (:mod:`evohpo.search.inheritance`), kept in ``weights_dir``
(relative to the file): by default the folder next to a SQLite or journal
storage (``<file>.artifacts``), else ``runs/<name>/weights``. It changes what
trials compute, so a study resumes only with the setting it was made with.

``[sampler.<name>]`` holds keyword arguments of the sampler's class, checked
when the file is read (:func:`evohpo.studies._schema.sampler_arguments`), so
that no study stores a value its sampler cannot use: those of
:class:`~evohpo.EvoSampler` (``[sampler.ga.mutation_rates]`` is a table of
:class:`~evohpo.evolution.mutation.MutationRates`' fields) and of Optuna's
``TPESampler`` but those that take a Python function (``gamma``, ``weights``,
``constraints_func``); ``[sampler.random]`` takes none.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evohpo.evolution.space import SearchSpace
from evohpo.exceptions import InvalidParameterError, StudyConfigError
from evohpo.search.batch_size import BatchTrials
from evohpo.search.samplers import PRUNERS, SAMPLERS, build_pruner, build_sampler
from evohpo.storage.artifacts import default_artifact_dir
from evohpo.storage.urls import resolve_storage_url
from evohpo.studies import _schema as schema
from evohpo.studies.sources import (
    CSV,
    IMAGE_FOLDER,
    CsvSource,
    ImageSource,
    check_dataset_name,
    image_space,
    parse_csv_source,
    parse_image_source,
)
from evohpo.training.task import TASKS, TaskName

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "DEFAULT_STORAGE_NAME",
    "Budget",
    "StudyConfig",
    "load_study_config",
    "parse_study_config",
]

#: File name of the default SQLite storage, next to the study file.
DEFAULT_STORAGE_NAME = "evohpo.db"


@dataclass(frozen=True)
class Budget:
    """How much each study may spend, in total over all its runs.

    Attributes
    ----------
    n_trials : int or None
        Finished (complete or pruned) trials per study.
    timeout : float or None
        Seconds of trial time per study.
    """

    n_trials: int | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class StudyConfig:
    """A parsed study file.

    Attributes
    ----------
    name : str
        Group name; studies are called ``<name>/<sampler>/seed<seed>``.
    description : str
        Free text.
    task : {"classification", "regression"}
        What the networks learn; trials maximise validation accuracy, or R2.
    dataset : str
        A name from :data:`evohpo.training.datasets.DATASETS`, ``"csv"``,
        ``"imagefolder"`` or ``"torchvision:<Name>"`` (see :mod:`evohpo.studies.sources`).
    test_fraction : float or None
        Share of rows held out for the final test; ``None`` uses the data
        set's canonical test split if it has one, else 0.2.
    validation_fraction : float
        Share of the remaining rows used to score trials.
    split_seed : int
        Seed of the (stratified) splits, the same for every sampler and seed.
    space : SearchSpace
        The search space.
    train : dict
        Keyword arguments of :class:`evohpo.training.config.TrainConfig` (no seed).
    batch_trials : int or "auto"
        ``[train] batch_trials``: trials asked and trained together; not part
        of a study's identity.
    inherit_weights : bool
        ``[train] inherit_weights``: GA children start from their parents' weights.
    weights_dir : Path or None
        ``[train] weights_dir``, resolved against the file's directory.
    budget : Budget
        Per-study budget.
    samplers : tuple of str
        Samplers compared by ``evohpo compare``.
    seeds : tuple of int
        Seeds compared by ``evohpo compare``.
    target : float or None
        Validation accuracy (R2 for regression) whose first reach is timed by
        ``compare``.
    sampler_options : dict
        Settings per sampler name (``[sampler.ga]`` ...), as the file gives
        them: part of each study's identity. :meth:`sampler_arguments` gives
        the keyword arguments of the sampler's class.
    pruner : dict
        ``{"name": ..., **options}`` from ``[pruner]``; ``"none"`` (the
        default) trains every trial to its end, so no sampler loses trials to
        a pruner tuned for another.
    storage : str or None
        Storage URL given in the file (relative paths resolved), or ``None``.
    base_dir : Path
        Directory of the study file: default storage, outputs and caches.
    source : str
        Where the configuration came from, for messages.
    images : ImageSource or None
        ``root``, ``image_size``, ``grayscale`` and ``download`` of image data.
    csv : CsvSource or None
        ``path``, ``target``, ``features`` and ``delimiter`` of a CSV file.
    """

    name: str
    dataset: str
    space: SearchSpace
    budget: Budget
    description: str = ""
    test_fraction: float | None = None
    validation_fraction: float = 0.2
    split_seed: int = 0
    train: Mapping[str, Any] = field(default_factory=dict)
    samplers: tuple[str, ...] = SAMPLERS
    seeds: tuple[int, ...] = (0,)
    target: float | None = None
    sampler_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    pruner: Mapping[str, Any] = field(default_factory=lambda: {"name": "none"})
    storage: str | None = None
    base_dir: Path = field(default_factory=Path.cwd)
    source: str = "<study>"
    images: ImageSource | None = None
    csv: CsvSource | None = None
    batch_trials: BatchTrials = "auto"
    inherit_weights: bool = False
    weights_dir: Path | None = None
    task: TaskName = "classification"

    def sampler_arguments(self, sampler: str) -> dict[str, Any]:
        """The keyword arguments of ``sampler``'s class: its ``[sampler.<name>]`` settings,
        a ``mutation_rates`` table made a :class:`~evohpo.evolution.mutation.MutationRates`."""
        return schema.sampler_arguments(sampler, self.sampler_options.get(sampler, {}), self.source)

    @property
    def data_label(self) -> str:
        """The data in words: the data set's name, or the CSV file's path."""
        return self.dataset if self.csv is None else self.csv.path

    @property
    def score_label(self) -> str:
        """The trials' value in words: ``"accuracy"`` or ``"R2"``."""
        return "R2" if self.task == "regression" else "accuracy"

    @property
    def score_key(self) -> str:
        """The trials' value in JSON keys (``validation_<key>``): ``"accuracy"`` or ``"r2"``."""
        return "r2" if self.task == "regression" else "accuracy"

    def weights_store(self, storage_url: str | None = None) -> Path:
        """Where trained weights are kept for the study at ``storage_url``."""
        if self.weights_dir is not None:
            return self.weights_dir
        folder = default_artifact_dir(storage_url or self.storage_url)
        if folder is not None:
            return folder
        # Names replaced without a digest before: their studies keep their weights there.
        earlier = self.base_dir / "runs" / _replaced(self.name) / "weights"
        if earlier.is_dir() and not (self.output_dir / "weights").exists():
            return earlier
        return self.output_dir / "weights"

    @property
    def output_dir(self) -> Path:
        """Where plots and exports of this study file go by default."""
        return self.base_dir / "runs" / _safe_name(self.name)

    @property
    def cache_dir(self) -> Path:
        """Where generated data sets are cached."""
        return self.base_dir / "runs" / "cache"

    @property
    def storage_url(self) -> str:
        """The storage of the file, or the default SQLite file next to it."""
        if self.storage is not None:
            return self.storage
        return resolve_storage_url(str(self.base_dir / DEFAULT_STORAGE_NAME))

    def data_identity(self) -> dict[str, Any]:
        """The settings that decide the rows each study sees."""
        identity: dict[str, Any] = {
            "dataset": self.dataset,
            "test_fraction": self.test_fraction,
            "validation_fraction": self.validation_fraction,
            "split_seed": self.split_seed,
        }
        if self.images is not None:  # only then: other study files keep their identity
            identity["images"] = self.images.identity()
        if self.csv is not None:
            identity["csv"] = self.csv.identity()
        return identity

    def data_digest(self) -> str | None:
        """A digest of the user's own data: a CSV file's bytes, an image folder's files.

        ``None`` for the data sets evohpo ships or torchvision fetches, which do
        not change under a study.
        """
        if self.csv is not None:
            return self.csv.digest(self.base_dir)
        if self.dataset == IMAGE_FOLDER and self.images is not None:
            return self.images.digest(self.base_dir)
        return None


def _replaced(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _safe_name(name: str) -> str:
    """``name`` as a folder name: itself when every character may stay, otherwise the
    replaced name plus a short digest of the real one, so that two names that replace
    to the same text ("my study", "my_study") keep apart, and "cache" stays apart from
    the data cache."""
    safe = _replaced(name)
    if safe == name and name != "cache":
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    return f"{safe or 'study'}-{digest}"


def load_study_config(path: str | os.PathLike[str], *, check_device: bool = True) -> StudyConfig:
    """Read and check a study file.

    Parameters
    ----------
    path : path
        A TOML study file.
    check_device : bool
        Check that ``[train] device`` is usable on this machine (that imports
        torch). Commands that train nothing may skip it.

    Returns
    -------
    StudyConfig

    Raises
    ------
    StudyConfigError
        If the file is missing, is not valid TOML (the message names the
        line), or holds unknown or invalid settings.
    """
    file = Path(path)
    if file.is_dir():
        inside = sorted(p.name for p in file.glob("*.toml"))
        hint = f" It holds {', '.join(inside)}." if inside else ""
        raise StudyConfigError(
            f"The study file {str(file)!r} is a directory; give the path of a .toml file.{hint}"
        )
    if not file.is_file():
        hint = ""
        if not file.suffix:
            candidate = file.with_suffix(".toml")
            if candidate.is_file():
                hint = f" Did you mean {str(candidate)!r}?"
        raise StudyConfigError(f"The study file {str(file)!r} does not exist.{hint}")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StudyConfigError(f"The study file {str(file)!r} cannot be read: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StudyConfigError(f"The study file {str(file)!r} is not valid TOML: {exc}.") from exc
    return parse_study_config(
        data,
        source=str(file),
        base_dir=file.resolve().parent,
        default_name=file.stem,
        check_device=check_device,
    )


def parse_study_config(
    data: Mapping[str, Any],
    *,
    source: str = "<study>",
    base_dir: str | os.PathLike[str] | None = None,
    default_name: str | None = None,
    check_device: bool = True,
) -> StudyConfig:
    """Check the mapping of a study file and build a :class:`StudyConfig`.

    Parameters
    ----------
    data : mapping
        The parsed TOML document.
    source : str
        Name of the file, used in messages.
    base_dir : path, optional
        Directory relative paths are resolved against; the working directory
        by default.
    default_name : str, optional
        Group name when the file sets none (the file's stem).
    check_device : bool
        Check that ``[train] device`` names a device this machine has (this
        imports torch).

    Examples
    --------
    >>> config = parse_study_config(
    ...     {"name": "demo", "data": {"dataset": "iris"}, "budget": {"n_trials": 4}}
    ... )
    >>> config.dataset, config.budget.n_trials, config.samplers
    ('iris', 4, ('ga', 'tpe', 'random'))
    """
    base = Path(base_dir).resolve() if base_dir is not None else Path.cwd()
    schema.check_keys(data, schema.TOP_KEYS, "", source)
    name = data.get("name", default_name)
    # The name is a folder under runs/: no separator, and not '.' or '..'.
    if not isinstance(name, str) or not name.strip() or "/" in name or name.strip() in (".", ".."):
        schema.config_error(
            source, "", "name", "a non-empty str without '/', not '.' or '..'", name
        )
    description = data.get("description", "")
    if not isinstance(description, str):
        schema.config_error(source, "", "description", "a str", description)
    rows = _parse_data(data, source)
    task = _parse_task(data, rows["dataset"], source)
    space_table = schema.get_table(data, "space", source)
    try:
        space = SearchSpace.from_dict(space_table)
    except InvalidParameterError as exc:
        raise StudyConfigError(f"{source}: [space]: {exc}") from exc
    if rows["images"] is not None:  # the images' shape, unless [space] sets one
        space = image_space(space, rows["dataset"], rows["images"], base, source)
    train = dict(schema.get_table(data, "train", source))
    schema.check_keys(train, schema.TRAIN_KEYS, "train", source)
    batch_trials = schema.batch_trials(train.pop("batch_trials", "auto"), "train", source)
    inherit_weights = train.pop("inherit_weights", False)
    if not isinstance(inherit_weights, bool):
        schema.config_error(source, "train", "inherit_weights", "true or false", inherit_weights)
    weights_dir = train.pop("weights_dir", None)
    if weights_dir is not None:
        if not isinstance(weights_dir, str) or not weights_dir:
            schema.config_error(source, "train", "weights_dir", "a folder path", weights_dir)
        weights_dir = base / Path(weights_dir).expanduser()
    schema.check_train(train, source, check_device=check_device)
    budget = _parse_budget(data, source)
    compare = _parse_compare(data, source)
    pruner = _parse_pruner(data, source)
    sampler_options = _parse_sampler_options(data, space, source)
    storage = data.get("storage")
    if storage is not None:
        if not isinstance(storage, str) or not storage:
            schema.config_error(source, "", "storage", "a storage URL or path", storage)
        storage = resolve_storage_url(storage, base_dir=base)
    return StudyConfig(
        name=name.strip(),
        description=description,
        space=space,
        train=train,
        batch_trials=batch_trials,
        inherit_weights=inherit_weights,
        weights_dir=weights_dir,
        task=task,
        budget=budget,
        **rows,
        **compare,
        sampler_options=sampler_options,
        pruner=pruner,
        storage=storage,
        base_dir=base,
        source=source,
    )


def _parse_data(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``dataset``, ``test_fraction``, ``validation_fraction``, ``split_seed``, the image
    settings (``images``) and the CSV settings (``csv``) of ``[data]``."""
    table = schema.get_table(data, "data", source, required=True)
    schema.check_keys(table, schema.DATA_KEYS, "data", source)
    dataset = check_dataset_name(table.get("dataset"), source)
    test_fraction = table.get("test_fraction")
    if test_fraction is not None:
        test_fraction = schema.fraction(test_fraction, "test_fraction", "data", source)
    return {
        "dataset": dataset,
        "images": parse_image_source(table, dataset, source),
        "csv": parse_csv_source(table, dataset, source),
        "test_fraction": test_fraction,
        "validation_fraction": schema.fraction(
            table.get("validation_fraction", 0.2), "validation_fraction", "data", source
        ),
        "split_seed": schema.integer(
            table.get("split_seed", 0), "split_seed", "data", source, low=0
        ),
    }


def _parse_task(data: Mapping[str, Any], dataset: str, source: str) -> TaskName:
    """The top-level ``task``: the data set's own by default, and only that one (a CSV file's
    target may be either: classes by default)."""
    from evohpo.training.datasets import REGRESSION_DATASETS

    own: TaskName = "regression" if dataset in REGRESSION_DATASETS else "classification"
    task = data.get("task", own)
    if task not in TASKS:
        listed = ", ".join(repr(t) for t in TASKS)
        schema.config_error(
            source, "", "task", f"one of {{{listed}}}", task, hint=schema.did_you_mean(task, TASKS)
        )
    if task != own and dataset != CSV:
        raise StudyConfigError(
            f"{source}: 'task' = {task!r}, but the data set {dataset!r} is for {own}: "
            f"its targets are {'numbers' if own == 'regression' else 'classes'}. Leave "
            "'task' out to take the data set's own, or choose a data set for "
            f"{task} ({_datasets_for(task)})."
        )
    checked: TaskName = task
    return checked


def _datasets_for(task: str) -> str:
    from evohpo.training.datasets import DATASETS, REGRESSION_DATASETS

    names = [n for n in sorted(DATASETS) if (n in REGRESSION_DATASETS) == (task == "regression")]
    return ", ".join(repr(n) for n in [*names, CSV])


def _parse_budget(data: Mapping[str, Any], source: str) -> Budget:
    table = schema.get_table(data, "budget", source, required=True)
    schema.check_keys(table, schema.BUDGET_KEYS, "budget", source)
    n_trials = table.get("n_trials")
    if n_trials is not None:
        n_trials = schema.integer(n_trials, "n_trials", "budget", source, low=1)
    timeout = table.get("timeout")
    if timeout is not None:
        timeout = schema.positive(timeout, "timeout", "budget", source)
    if n_trials is None and timeout is None:
        raise StudyConfigError(
            f"{source}: [budget] needs 'n_trials', 'timeout' or both; it sets neither."
        )
    return Budget(n_trials=n_trials, timeout=timeout)


def _parse_compare(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``samplers``, ``seeds`` and ``target`` of ``[compare]``."""
    table = schema.get_table(data, "compare", source)
    schema.check_keys(table, schema.COMPARE_KEYS, "compare", source)
    samplers = table.get("samplers", list(SAMPLERS))
    if (
        not isinstance(samplers, list)
        or not samplers
        or any(s not in SAMPLERS for s in samplers)
        or len(set(samplers)) != len(samplers)
    ):
        schema.config_error(
            source,
            "compare",
            "samplers",
            f"a non-empty list of distinct {list(SAMPLERS)}",
            samplers,
        )
    seeds = table.get("seeds", [0])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        schema.config_error(source, "compare", "seeds", "a non-empty list of distinct ints", seeds)
    target = table.get("target")
    if target is not None:
        target = schema.fraction(target, "target", "compare", source, allow_one=True)
    return {
        "samplers": tuple(samplers),
        "seeds": tuple(schema.integer(s, "seeds", "compare", source, low=0) for s in seeds),
        "target": target,
    }


def _parse_pruner(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    pruner = dict(schema.get_table(data, "pruner", source))
    pruner.setdefault("name", "none")
    if not isinstance(pruner["name"], str) or pruner["name"] not in PRUNERS:
        listed = ", ".join(repr(n) for n in PRUNERS)
        schema.config_error(
            source,
            "pruner",
            "name",
            f"one of {{{listed}}}",
            pruner["name"],
            hint=schema.did_you_mean(pruner["name"], PRUNERS),
        )
    schema.check_pruner_keys(pruner, source)
    schema.check_pruner_values(pruner, source)
    try:
        build_pruner(pruner)
    except (TypeError, ValueError) as exc:
        raise StudyConfigError(f"{source}: [pruner]: {exc}") from exc
    return pruner


def _parse_sampler_options(
    data: Mapping[str, Any], space: SearchSpace, source: str
) -> dict[str, dict[str, Any]]:
    """The settings of every sampler (``[sampler.<name>]``), each checked and tried once.

    A bad setting is refused here, before any study stores it in its identity.
    """
    table = schema.get_table(data, "sampler", source)
    schema.check_keys(table, SAMPLERS, "sampler", source)
    sampler_options: dict[str, dict[str, Any]] = {}
    for name in SAMPLERS:
        options = dict(schema.get_table(table, name, source, prefix="sampler."))
        arguments = schema.sampler_arguments(name, options, source)
        sampler_options[name] = options
        try:
            build_sampler(name, seed=0, options=arguments, space=space)
        except (TypeError, ValueError) as exc:
            raise StudyConfigError(f"{source}: [sampler.{name}]: {exc}") from exc
    return sampler_options
