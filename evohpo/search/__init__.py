"""One search, shared by study files and the estimator: the objective and its parts."""
