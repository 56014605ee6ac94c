"""End-to-end studies (the paper benchmark) built from the public API."""

from .paper import PAPER_RESULTS, StudySettings, run_paper_study

__all__ = ["PAPER_RESULTS", "StudySettings", "run_paper_study"]
