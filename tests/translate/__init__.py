"""Tests of cortex.translate."""
