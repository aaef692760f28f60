"""Tuning the service's batching and length limits from measurements.

    translator tune --models-dir models --p95-ms 500 --out results/tuning           tuning/tune.py

The sweep (sweep.py), the length study (lengths.py), the report (report.py) and its plots (plots.py);
the load generator, the local server runner, metric scraping and corpus picking it runs on are the
loadtest package. Nothing here imports torch (the plots need the `tune` extra, matplotlib).
"""
