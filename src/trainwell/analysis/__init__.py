"""Analysis of models and runs: diagnostics, pruning, ... (one subpackage or module per concept)."""
