"""Tests of the scripts in ``benchmarks/`` (loaded from their files: ``tests.conftest.load_script``)."""
