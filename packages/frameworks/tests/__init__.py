"""Tests of tether-frameworks."""
