"""EvoSearchClassifier: the whole architecture search behind scikit-learn's API."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from sklearn.base import ClassifierMixin
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from evohpo.estimator.base import _EvoSearchBase
from evohpo.estimator.params import (
    DEFAULT_SEARCH_SPACE,
    Settings,
    check_input_width,
    check_n_classes,
    encode_labels,
)
from evohpo.estimator.refit import mean_log_proba, mean_proba
from evohpo.training.task import TaskName

__all__ = ["DEFAULT_SEARCH_SPACE", "EvoSearchClassifier"]


class EvoSearchClassifier(ClassifierMixin, _EvoSearchBase):  # type: ignore[misc]
    """Neural-architecture and hyperparameter search for a neural network classifier.

    ``fit`` runs an Optuna study whose trials each train one network (a
    :class:`~evohpo.Genome`: layers, units, activations, dropout, optimizer,
    learning rate, weight decay, batch size; with ``input_shape`` also a
    convolutional body) on a training split and score it
    on a validation split; it then retrains the best genomes on all the data
    and predicts with the average of their class probabilities. The search is
    a genetic algorithm (:class:`~evohpo.EvoSampler`) by default, Optuna's TPE
    or random search on request.

    Parameters
    ----------
    n_trials : int or None, default=20
        Total number of finished (complete or pruned) trials the study should
        hold. A resumed study only runs the trials still missing. ``None``
        (only with ``timeout``): no trial limit, the timeout ends the search.
    timeout : float, optional
        Seconds for the whole ``fit``, the refit included. The search stops
        starting trials when the time left would not cover the refit of the
        current ensemble (estimated from its members' trials), no training
        runs past the limit (a trial reaching it stops with ``stop_reason ==
        "time_limit"``), and the refit trains in what is left (at least a
        second): the best members whose estimated refits fit in it (the best
        one always), a member still cut to less than three quarters of its
        epochs left out. Checking the data and opening the study count too.
        With ``cv``, a trial's time is shared equally by its folds. With
        ``n_jobs > 1`` the workers keep a fixed fifth of the timeout for the
        refit (their trials' estimate would need one process), and the time
        their interpreters take to start counts.
    sampler : {"ga", "tpe", "random"} or optuna.samplers.BaseSampler, default="ga"
        ``"ga"``: :class:`~evohpo.EvoSampler` with a population of
        ``min(20, max(4, n_trials // 3))`` genomes (random genomes first, then
        bred ones), or of 10 with ``n_trials=None``: a time budget buys an
        unknown number of trials, and a small population starts breeding early.
        ``"tpe"``: :class:`optuna.samplers.TPESampler`. ``"random"``:
        :class:`optuna.samplers.RandomSampler`. A sampler instance is deep-copied
        at every ``fit`` and used with its own seed.
    search_space : SearchSpace or dict, optional
        Ranges and choices of the genes; a dict holds :class:`~evohpo.SearchSpace`
        settings (``{"max_layers": 2, "units": (16, 128)}``). ``None`` means
        :data:`DEFAULT_SEARCH_SPACE`.
    input_shape : tuple of int, optional
        ``(channels, length)`` for signals or ``(channels, height, width)`` for
        images: every row of ``X`` (flat, ``n_features`` values) is folded to
        this shape inside the network, and the genomes get a convolutional body
        of blocks (:class:`~evohpo.evolution.blocks.BlockGene`: channels, kernel,
        stride, pooling, residual, batch norm, activation, dropout) before their
        dense layers. Its product must equal ``n_features`` (digits as images:
        ``(1, 8, 8)``). The search space gets this input shape (the default
        space's body settings unless ``search_space`` sets them); a search space
        with another input shape is an error. ``None``: the search space's input
        shape if it has one, else dense networks.
    max_epochs : int, default=100
        Epoch limit of every training.
    patience : int or None, default=20
        Early stopping: a training stops after this many epochs without a better
        validation accuracy. ``None`` trains every network ``max_epochs`` epochs.
    validation_fraction : float, default=0.2
        Share of every class held out (stratified) to score the trials.
    cv : int, optional
        Score every trial by stratified ``cv``-fold cross-validation instead
        (``cv`` trainings per trial). Worth it
        on a few hundred rows, where one small validation split picks genomes
        by its noise (docs/benchmarks.md, "Regression").
    scoring : str or callable, optional
        The trials' value (``None``: ``"accuracy"``): a classification scorer
        name of :func:`sklearn.metrics.get_scorer_names`
        (``"accuracy"``, ``"balanced_accuracy"``, ``"f1_macro"``,
        ``"neg_log_loss"``, ...) or a scorer ``scorer(estimator, X, y)``. Scorers
        see labels encoded as ``0 .. n_classes - 1`` (in the order of
        ``classes_``: a binary ``"f1"`` scores the second class as positive) and
        the standardised float32 features the networks see. Early stopping and
        pruning use validation accuracy whatever the scoring.
    storage : str, optional
        ``None`` keeps the study in memory; an Optuna storage URL
        (``"sqlite:///search.db"``, ``"postgresql://..."``) persists it.
    study_name : str, optional
        Name of the study. With ``storage`` it is how a search is found again to
        resume it; ``None`` makes a new, uniquely named study every ``fit``. Leave
        it ``None`` under ``GridSearchCV`` or ``cross_val_score``: their fits see
        other rows, and resuming a study on other data is refused.
    resume : bool, default=True
        When ``storage`` already holds a study named ``study_name``: continue it
        up to ``n_trials`` finished trials (``True``), or raise
        :class:`optuna.exceptions.DuplicatedStudyError` (``False``). A study made
        for another search (other scoring, search space, classes, features,
        validation, epochs, patience, seed, or other rows of ``X`` and ``y``)
        raises :class:`~evohpo.exceptions.StudyMismatchError` and is left
        unchanged. With ``random_state=None`` a resumed study keeps the seed it was
        made with, hence its validation split. With ``"ga"`` and a
        fixed ``random_state``, a search stopped after ``k`` finished trials (a
        timeout, an interrupt between trials) and resumed with the same
        parameters makes the same trials as one run straight through, when ``k``
        is a multiple of the trials asked at once (``batch_trials``). A larger
        ``n_trials`` breeds on with another population (its default follows
        ``n_trials``; pass ``sampler=EvoSampler(population_size=...)`` to keep
        one). TPE and random sampling continue
        with a fresh random stream (seeded from ``random_state`` and ``k``) so
        they do not repeat the first run's trials.
    pruner : optuna.pruners.BasePruner, optional
        Stops unpromising trainings early, from the validation accuracy reported
        after every epoch (every fold with ``cv``). ``None``: no pruning.
    n_jobs : int or None, default=1
        Trials trained at once, by this process and ``n_jobs - 1`` worker
        processes (one torch thread each); ``-1`` for one per CPU, ``None`` for
        1. Workers share the
        study through its storage, a temporary journal file when ``storage`` is
        ``None`` (see :mod:`evohpo.workers`), and the GA breeds from whatever has
        finished. Starting a worker takes a while: worth it for slow trials.
        With more than one, the order of the trials, hence the result, is not
        reproducible, and trials still running when the total is reached
        finish: the study may hold up to ``n_jobs - 1`` more than ``n_trials``.
        Objects the workers rebuild (``scoring``, ``sampler``, ``pruner``) must
        be picklable.
    batch_trials : int or "auto", default="auto"
        Trials asked from the study and trained together, in each process: dense
        genomes of the same depth and batch size train as one stacked network
        (:mod:`evohpo.training.population`), several times faster than one by
        one on small networks; convolutional genomes train one after the
        other. The sampler sees them as that many running trials, as it would
        see as many workers' trials. ``"auto"``: 8 on the CPU, 16 on CUDA
        (see ``docs/benchmarks.md``), at most the GA's population. ``1`` runs
        one trial at a time. Combines with ``n_jobs``.
    inherit_weights : bool, default=False
        Lamarckian weight inheritance (:mod:`evohpo.search.inheritance`): every
        trial's trained weights are kept, and a GA child starts from its
        parents' (copied gene by gene, widened or deepened without changing
        their function where it can) instead of from scratch. Off by default:
        ``docs/benchmarks.md`` ("Weight inheritance") measures when it pays.
    weights_dir : str, optional
        Where the weights are kept with ``inherit_weights``: a folder (or any
        ``optuna.artifacts`` store object) every worker can reach. By default a
        folder next to a SQLite or journal ``storage`` (``<file>.artifacts``),
        else a temporary folder removed after ``fit``; a database server needs
        one.
    random_state : int, RandomState instance or None, default=None
        Root of every random choice (splits, samplers, weight initialisation,
        batch order, dropout). An int makes ``fit`` reproducible on the CPU.
    verbose : int, default=0
        ``0``: silent. ``1``: a progress bar on the search and INFO log lines at
        its start and end (logger ``"evohpo"``). ``2``: also one line per trial.
        The bar is never drawn when the environment variable
        ``EVOHPO_NO_PROGRESS`` is set (not to ``0``).
    refit : bool, default=True
        Retrain the best genomes on all the data; ``predict`` and friends need it.
    ensemble_size : int, default=5
        How many of the best trials the refit retrains: the complete trials in
        order of score (ties broken as for ``best_params_``), a trial whose
        parameters equal a better one's skipped. ``predict_proba`` averages their
        class probabilities: on small data the best validation score is a noisy
        estimate and one network varies with its seed, so the average of a few
        of the best networks is steadier. ``1``: the best trial's genome alone.
        The refit costs one training on all the data per member.
    device : str, default="auto"
        Torch device of the trainings: ``"auto"`` (CUDA when available, else the
        CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... Small networks on a few
        thousand rows often train faster on the CPU.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, sorted.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names, when ``X`` was a DataFrame with string column names.
    best_params_ : dict
        Optuna parameters of the best trial (``n_layers``, ``layer0.units``, ...):
        the complete trial with the highest score, a lower validation loss
        breaking ties (then the earlier trial). Small validation sets make ties
        of accuracy common; the tie-break prefers the more confident network.
    best_score_ : float
        Validation score of the best trial.
    best_genome_ : Genome
        The best trial's genome.
    best_index_ : int
        Index of the best trial in ``cv_results_``.
    best_model_ : torch.nn.Sequential
        The best genome trained on all the data (only with ``refit=True``), the
        first of ``ensemble_models_``. It takes standardised features; use
        ``predict_proba`` rather than calling it.
    ensemble_models_ : list of torch.nn.Sequential
        The refitted members, best first (only with ``refit=True``); at most
        ``ensemble_size``, fewer when the study holds fewer distinct complete
        trials.
    ensemble_genomes_ : list of Genome
        Their genomes, in the same order.
    ensemble_trials_ : list of int
        Their trial numbers, in the same order.
    refit_epochs_ : list of int
        Epochs of every member's refit: its trial's best epoch (median over
        folds), scaled by the ratio of all rows to the rows a trial trained on,
        rounded (about ``x 1.25`` with ``validation_fraction=0.2``). A trial
        stopped at its best epoch by early stopping; a refit on more data, with
        no validation rows left to stop it, trains proportionally longer.
    refit_time_ : float
        Seconds the whole refit took.
    study_ : optuna.Study
        The study: every trial with its parameters, genome, lineage, scores and
        intermediate values. After unpickling it is rebuilt on first access:
        from its storage URL, or (in-memory studies) from a copy of its trials,
        with a plain random sampler.
    cv_results_ : dict of lists
        One entry per finished or failed trial of the study, by trial number;
        ``pandas.DataFrame(clf.cv_results_)`` loads it. Keys: ``number``,
        ``state``, ``params``, ``param_<name>`` (``None`` where a trial lacks the
        parameter), ``mean_test_score``, ``std_test_score``, ``rank_test_score``,
        with ``cv`` also ``split<k>_test_score``, and ``mean_fit_time``,
        ``n_parameters``, ``best_epoch``, ``epochs_run``, ``stop_reason``,
        ``val_accuracy``, ``val_loss``, ``genome``.
    n_trials_ : int
        Finished (complete or pruned) trials in the study after ``fit``.

    Notes
    -----
    Inputs are standardised inside the estimator, with statistics of the
    training rows of each split, and of all the rows for the refit.

    On the CPU, small dense networks train with one torch thread (a second one
    gains nothing there), and networks bound by arithmetic (wider dense
    ones, convolutional genomes; :func:`evohpo.training.cost.arithmetic_bound`)
    with the threads torch had when ``fit`` started, shared among ``n_jobs``
    processes (``torch.set_num_threads`` before ``fit`` sets them; the previous
    setting is restored after ``fit``).

    While ``fit`` runs, Optuna's own per-trial log lines are silenced (its
    log level is process-wide and restored afterwards).

    Pickling keeps the fitted model (as a CPU ``state_dict``, rebuilt on the CPU)
    and a reference to the study, not the study object itself.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from evohpo import EvoSearchClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = EvoSearchClassifier(n_trials=2, max_epochs=5, random_state=0, device="cpu")
    >>> clf.fit(X, y).predict(X[:3]).shape
    (3,)
    """

    _task: ClassVar[TaskName] = "classification"

    # -- the targets -----------------------------------------------------------------------
    def _check_data(
        self, X: Any, y: Any, settings: Settings
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[Any]]:
        """``X`` as floats, ``y`` encoded as indices of the sorted classes, the classes."""
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_input_width(settings.input_shape, X.shape[1], settings.owner)
        classes, y_encoded = encode_labels(y)  # first: it names labels that do not sort
        check_classification_targets(y)
        check_n_classes(classes, len(y_encoded), settings.cv)
        return X, y_encoded, classes

    def _set_targets(self, classes: npt.NDArray[Any] | None, y: npt.NDArray[Any]) -> None:
        assert classes is not None  # what _check_data returned
        self.classes_: npt.NDArray[Any] = classes

    def _n_outputs(self) -> int:
        return len(self.classes_)

    # -- prediction ------------------------------------------------------------------------
    @available_if(_EvoSearchBase._check_refit)  # type: ignore[untyped-decorator]  # sklearn is untyped
    def predict_proba(self, X: Any) -> npt.NDArray[np.float64]:
        """Class probabilities, columns in the order of ``classes_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            The average of the ensemble members' probabilities.
        """
        X = self._scaled(X)  # first: it checks that the estimator is fitted
        return mean_proba(self.ensemble_models_, X)

    @available_if(_EvoSearchBase._check_refit)  # type: ignore[untyped-decorator]  # sklearn is untyped
    def predict_log_proba(self, X: Any) -> npt.NDArray[np.float64]:
        """Logarithm of :meth:`predict_proba`, computed stably from the logits."""
        X = self._scaled(X)
        return mean_log_proba(self.ensemble_models_, X)

    @available_if(_EvoSearchBase._check_refit)  # type: ignore[untyped-decorator]  # sklearn is untyped
    def predict(self, X: Any) -> npt.NDArray[Any]:
        """Most probable class of every row, a label of ``classes_``."""
        proba = self.predict_proba(X)
        labels: npt.NDArray[Any] = self.classes_[proba.argmax(axis=1)]
        return labels
