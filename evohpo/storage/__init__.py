"""The storage layer: URLs, opening and closing, and every access to Optuna's storage internals."""
