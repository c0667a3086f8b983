"""Tests of services.web."""
