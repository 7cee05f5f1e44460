"""Helpers shared by the tests (an importable package: tests/ is on pytest's `pythonpath`)."""
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
