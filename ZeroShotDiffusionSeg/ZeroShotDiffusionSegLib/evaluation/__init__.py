"""Measurement: accuracy against ground truth (``zsdseg eval``) and speed and
memory per stage (``zsdseg bench``).

Modules: ``metrics`` (Dice, IoU, HD95), ``statistics`` (per-set summaries), ``layouts``
(where images and masks are in a data set), ``oracle`` (the partition's ceiling),
``baselines`` (weight-free yardsticks), ``report`` (report.md, results.json, overlays),
``cli`` and ``bench`` (the two subcommands).
"""
