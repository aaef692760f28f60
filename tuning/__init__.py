"""Measuring the service under load and tuning its batching and length limits from the measurements.

    translator load --url http://127.0.0.1:8000 --concurrency 16 --duration 30     tuning/load.py
    translator tune --models-dir models --p95-ms 500 --out results/tuning           tuning/tune.py

Serving-side only: nothing here imports torch (the tuner's plots need the `tune` extra, matplotlib).
"""
