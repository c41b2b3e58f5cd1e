"""Tests of cortex.protocol."""
