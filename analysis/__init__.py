"""From a run's results to tidy CSVs, tables, plots and claim verdicts."""
