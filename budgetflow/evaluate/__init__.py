"""Datasets and the evaluation runner."""

from budgetflow.evaluate.datasets import BUILTIN_DATASETS, Dataset, FieldMap, load_dataset, load_jsonl
from budgetflow.evaluate.runner import QuestionResult, StrategyReport, evaluate

__all__ = [
    "BUILTIN_DATASETS",
    "Dataset",
    "FieldMap",
    "QuestionResult",
    "StrategyReport",
    "evaluate",
    "load_dataset",
    "load_jsonl",
]
