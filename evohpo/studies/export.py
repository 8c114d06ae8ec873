"""Find the best trial of a study group and export its genome and model.

An export directory holds these files (:data:`EXPORT_FILES`), written
atomically and never outside that directory:

``model.pt``
    The network's ``state_dict`` (tensors only), loadable with
    ``torch.load(path, weights_only=True)`` into
    ``evohpo.training.nn.build_model(genome, n_features, n_outputs)`` (with
    ``input_shape=`` the metadata's ``input_shape`` when it has one).
``genome.json``
    The genome (:meth:`evohpo.Genome.to_json`).
``classes.json``
    Class names, in the order of the model's outputs (classification only: a
    regression export has none, and an earlier export's is removed).
``metadata.json``
    Where it came from (study, trial, scores), the model's output width
    (``n_outputs``; ``n_classes`` too for classification) and the feature
    standardisation to apply before the model: ``(x - mean) / scale``; for
    regression also the target standardisation to undo after it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from evohpo._interrupt import GracefulStop
from evohpo._paths import folder_problem
from evohpo._version import __version__
from evohpo.evolution.genome import Genome
from evohpo.exceptions import InvalidParameterError
from evohpo.studies.config import StudyConfig
from evohpo.studies.data import PreparedData
from evohpo.studies.group import group_studies
from evohpo.studies.refit import best_genome, measure_test_accuracy, refit
from evohpo.studies.run import make_objective

__all__ = ["EXPORT_FILES", "BestTrial", "ExportResult", "export_best", "find_best"]


#: The files an export writes (a regression export all but ``classes.json``).
EXPORT_FILES: tuple[str, ...] = ("model.pt", "genome.json", "classes.json", "metadata.json")


@dataclass(frozen=True)
class BestTrial:
    """The best trial over the studies searched.

    Attributes
    ----------
    study : optuna.Study
    trial : FrozenTrial
    genome : Genome
    sampler : str
    seed : int
    score_key : str
        What the trials' value is, as the study file's
        :attr:`~evohpo.studies.config.StudyConfig.score_key` names it:
        ``"accuracy"`` or ``"r2"``.
    """

    study: optuna.Study
    trial: FrozenTrial
    genome: Genome
    sampler: str
    seed: int
    score_key: str = "accuracy"

    @property
    def value(self) -> float:
        """Validation score of the trial (accuracy, or R2 for regression)."""
        return float(self.trial.value if self.trial.value is not None else math.nan)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: study, trial, value (``validation_<score_key>``), genome
        and parameters."""
        return {
            "study": self.study.study_name,
            "sampler": self.sampler,
            "seed": self.seed,
            "trial": self.trial.number,
            f"validation_{self.score_key}": self.value,
            "genome": self.genome.to_dict(),
            "params": dict(self.trial.params),
        }


def find_best(
    storage: BaseStorage,
    config: StudyConfig,
    *,
    sampler: str | None = None,
    seed: int | None = None,
) -> BestTrial:
    """The best completed trial of the group's studies, narrowed by sampler and seed.

    Raises
    ------
    InvalidParameterError
        If no matching study holds a completed trial.
    """
    best: BestTrial | None = None
    # A tie goes to the first study in plain name order.
    for stored in sorted(group_studies(storage, config.name), key=lambda s: s.name):
        if (sampler is not None and stored.sampler != sampler) or (
            seed is not None and stored.seed != seed
        ):
            continue
        study = optuna.load_study(study_name=stored.name, storage=storage)
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            continue
        trial = study.best_trial
        value = -math.inf if trial.value is None else trial.value  # 0.0 is a score
        if best is None or value > best.value:
            best = BestTrial(
                study, trial, best_genome(trial), stored.sampler, stored.seed, config.score_key
            )
    if best is None:
        which = f"{config.name!r}"
        if sampler is not None:
            which += f", sampler {sampler!r}"
        if seed is not None:
            which += f", seed {seed}"
        raise InvalidParameterError(
            f"No completed trial found for {which} in the storage; run "
            "'evohpo run' or 'evohpo compare' first."
        )
    return best


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_best` wrote.

    Attributes
    ----------
    directory : Path
    files : list of Path
    best : BestTrial
    test_accuracy : float or None
    """

    directory: Path
    files: list[Path]
    best: BestTrial
    test_accuracy: float | None


def export_best(
    best: BestTrial,
    config: StudyConfig,
    data: PreparedData,
    directory: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    guard: GracefulStop | None = None,
    storage_url: str | None = None,
) -> ExportResult:
    """Retrain ``best``'s genome and write the export files.

    The genome is trained as for the test score (:func:`evohpo.studies.refit.refit`):
    on the training and validation rows, for the trial's best epoch count, from
    the weights the trial started from.

    Parameters
    ----------
    best : BestTrial
    config : StudyConfig
    data : PreparedData
        The study file's splits (the same the search used).
    directory : path
        The output directory, created if missing. Only :data:`EXPORT_FILES`
        are written there, never elsewhere.
    overwrite : bool
        Replace an earlier export; otherwise existing files are an error.
    storage_url : str, optional
        The study's storage, which says where inherited weights are kept
        (:meth:`StudyConfig.weights_store`); the study file's by default.

    Raises
    ------
    FileExistsError
        If an export file exists and ``overwrite`` is false, or a target is a
        symbolic link or not a regular file.
    """
    import torch

    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"The export path {str(out)!r} exists and is not a directory.")
    names = [n for n in EXPORT_FILES if data.task != "regression" or n != "classes.json"]
    targets = [out / name for name in names]
    for target in [out / name for name in EXPORT_FILES]:
        if target.is_symlink() or (target.exists() and not target.is_file()):
            raise FileExistsError(
                f"Refusing to write {str(target)!r}: it is a link or not a regular file."
            )
        if target.exists() and not overwrite:
            raise FileExistsError(
                f"{str(target)!r} exists; use another output directory or --force to replace it."
            )
    _check_writable_parent(out)
    # The storage tells where inherited weights are kept (inherit_weights).
    objective = make_objective(config, data, best.seed, storage_url)
    guard = guard if guard is not None else GracefulStop()
    guard.check()
    result = refit(objective, best.trial, best.study)  # stops at a training step on a signal
    model = result.model.cpu()
    standardizer = objective.standardizer()
    scaler = objective.target_standardizer()
    score = config.score_key  # the trials' value, named as `evohpo best` names it
    test_accuracy = measure_test_accuracy(best.study, objective, data, guard=guard)
    state = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
    shape = config.space.input_shape
    metadata: dict[str, Any] = {
        "evohpo_version": __version__,
        "study": best.study.study_name,
        "group": config.name,
        "dataset": config.data_label,
        "sampler": best.sampler,
        "seed": best.seed,
        "trial": best.trial.number,
        f"validation_{score}": best.value,
        f"test_{score}": test_accuracy,
        "n_features": int(data.X_train.shape[1]),
        **({} if data.feature_names is None else {"features": list(data.feature_names)}),
        "n_outputs": data.n_classes if scaler is None else len(scaler.mean),
        **({} if scaler is not None else {"n_classes": data.n_classes}),
        "standardize": {
            "mean": [float(v) for v in standardizer.mean],
            "scale": [float(v) for v in standardizer.scale],
        },
        "load": (
            "import evohpo.training.nn, torch; "
            "genome = evohpo.Genome.from_json(open('genome.json').read()); "
            "model = evohpo.training.nn.build_model(genome, n_features, n_outputs"
            f"{'' if shape is None else ', input_shape=input_shape'}); "
            "model.load_state_dict(torch.load('model.pt', weights_only=True)); model.eval()"
        ),
    }
    if shape is not None:  # rows are folded to this shape inside the model
        metadata["input_shape"] = list(shape)
    if scaler is not None:  # the model predicts standardised targets: outputs * scale + mean
        metadata["task"] = "regression"
        metadata["target_standardize"] = {
            "mean": [float(v) for v in scaler.mean],
            "scale": [float(v) for v in scaler.scale],
        }
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidParameterError(
            f"Cannot make the export directory {str(out)!r}: {exc.strerror or exc}."
        ) from exc
    _write_atomically(out, "model.pt", lambda handle: torch.save(state, handle))
    _write_text(out, "genome.json", best.genome.to_json() + "\n")
    if scaler is None:
        _write_text(out, "classes.json", json.dumps(list(data.class_names), indent=2) + "\n")
    else:  # an earlier classification export's class names would not fit this model
        (out / "classes.json").unlink(missing_ok=True)
    _write_text(out, "metadata.json", json.dumps(metadata, indent=2) + "\n")
    return ExportResult(out, targets, best, test_accuracy)


def _check_writable_parent(out: Path) -> None:
    """Refuse, before the refit, a directory that could not be made or written."""
    problem = folder_problem(out)
    if problem is not None:
        raise InvalidParameterError(f"Cannot make the export directory {str(out)!r}: {problem}.")


def _write_text(directory: Path, name: str, text: str) -> None:
    _write_atomically(directory, name, lambda handle: handle.write(text.encode("utf-8")))


def _write_atomically(directory: Path, name: str, write: Any) -> None:
    """Write ``directory/name`` through a temporary file in the same directory."""
    if name not in EXPORT_FILES or Path(name).name != name:
        raise InvalidParameterError(f"Not an export file name: {name!r}.")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    except OSError as exc:  # a folder the permission bits did not tell (root, read-only mounts)
        raise InvalidParameterError(
            f"Cannot write {name} in the export directory {str(directory)!r}: "
            f"{exc.strerror or exc}."
        ) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        # mkstemp creates the file private (0600); give it the usual permissions.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, directory / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current
