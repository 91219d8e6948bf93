"""The Spark engine of ``ComputeRFM`` (``--engine spark``): the same artifacts as the DuckDB engine.

Spark distributes the work over the input files and aggregates per customer;
each file is parsed and classified by the same DuckDB SQL as the DuckDB
engine (``steps.features.transactions``), and the per-customer rows are scored
and written by the same code (``steps.features.compute``). See docs/scale.md.
"""
