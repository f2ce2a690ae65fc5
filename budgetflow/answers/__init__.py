"""Answer extraction, equivalence and grading."""

from budgetflow.answers.equivalence import answers_match, normalize_answer, parse_number
from budgetflow.answers.extract import extract_answer, extract_boxed
from budgetflow.answers.grading import Grader, MatchGrader, MathGrader

__all__ = [
    "Grader",
    "MatchGrader",
    "MathGrader",
    "answers_match",
    "extract_answer",
    "extract_boxed",
    "normalize_answer",
    "parse_number",
]
