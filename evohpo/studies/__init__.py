"""Study files: experiments over several samplers and seeds, described in TOML.

Modules, one job each:

* :mod:`~evohpo.studies.config`: the study file and its parsed form
  (:class:`~evohpo.studies.config.StudyConfig`); :mod:`~evohpo.studies._schema`
  holds its keys and the checks of their values;
* :mod:`~evohpo.studies.data`: the train, validation and test splits every
  study of a file shares;
* :mod:`~evohpo.studies.group`: the Optuna studies of a file in a storage:
  names, identity, creation, listing;
* :mod:`~evohpo.studies.run`: running one study up to its budget;
* :mod:`~evohpo.studies.refit`: the test accuracy of a study's best genome;
* :mod:`~evohpo.studies.compare`: running and summarising every study of a
  file; :mod:`~evohpo.studies.report` prints the table,
  :mod:`~evohpo.studies.plots` draws the histories;
* :mod:`~evohpo.studies.export`: the best trial of a group and its export;
* :mod:`~evohpo.studies.dashboard`: optuna-dashboard on the storage;
* :mod:`~evohpo.studies.workers`: worker processes on a study of a file.
"""
