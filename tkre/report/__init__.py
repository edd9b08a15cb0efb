"""Reports from a sweep's results table: tables, paired comparisons, generator comparison, plots."""
