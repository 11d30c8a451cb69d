"""Reports: comparison tables and plots of evaluation results."""
