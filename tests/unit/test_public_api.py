from __future__ import annotations

import budgetflow
import budgetflow.backends
import budgetflow.errors
import budgetflow.strategies


def test_top_level_public_names_are_pinned() -> None:
    assert sorted(budgetflow.__all__) == sorted(
        [
            "AudioPart", "Backend", "BudgetflowError", "Completion", "FunctionBackend", "ImagePart",
            "Message", "OpenAICompatibleBackend", "Question", "Request", "Response", "SamplingParams",
            "ScriptedBackend", "Single", "TextPart", "Usage", "VideoPart", "Vote", "__version__",
            "run_strategy",
        ]
    )  # fmt: skip
    for name in budgetflow.__all__:
        assert hasattr(budgetflow, name)


def test_backends_export_the_embedded_backend_lazily() -> None:
    assert "EmbeddedBackend" in budgetflow.backends.__all__
    assert budgetflow.backends.EmbeddedBackend.__name__ == "EmbeddedBackend"


def test_every_error_is_a_budgetflow_error() -> None:
    for name in budgetflow.errors.__all__:
        value = getattr(budgetflow.errors, name)
        if isinstance(value, type):
            assert issubclass(value, budgetflow.errors.BudgetflowError)
