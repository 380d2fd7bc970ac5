"""Test-wide settings.

Hypothesis runs derandomized (the same examples on every run, so CI is
reproducible) and without per-example deadlines (the 2-core CI machine is often
busy; deadlines there only measure the load, not our code).
"""

from hypothesis import settings

settings.register_profile("project", derandomize=True, deadline=None)
settings.load_profile("project")
