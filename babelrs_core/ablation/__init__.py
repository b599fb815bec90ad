"""The ablation (``babelrs ablation run``, docs/ablation.md): plan, run, report."""
