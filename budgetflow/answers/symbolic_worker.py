"""The math-verify worker process: reads `[gold, predicted]` lines, writes `true`/`false` lines.

Started by `budgetflow.answers.symbolic.SymbolicEquivalence`; it runs math-verify in its main
thread, where math-verify's `signal.alarm` timeouts work, and exits when its input closes.
"""

from __future__ import annotations

import json
import logging
import sys

__all__ = ["main", "symbolically_equal"]

#: math-verify's own limit (seconds) on parsing one answer and on one comparison.
STEP_SECONDS = 3


def symbolically_equal(gold: str, predicted: str) -> bool:
    """Whether math-verify finds `predicted` equal to `gold` (both LaTeX or plain expressions)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    parsed_gold = parse(f"${gold}$", extraction_config=configs, parsing_timeout=STEP_SECONDS)
    parsed_predicted = parse(f"${predicted}$", extraction_config=configs, parsing_timeout=STEP_SECONDS)
    if not parsed_gold or not parsed_predicted:
        return False
    return bool(verify(parsed_gold, parsed_predicted, timeout_seconds=STEP_SECONDS))


def main() -> None:
    logging.disable(logging.CRITICAL)  # math-verify logs every parse failure
    for line in sys.stdin:
        try:
            gold, predicted = json.loads(line)
            same = symbolically_equal(str(gold), str(predicted))
        except Exception:  # a malformed pair or a SymPy failure: not equivalent
            same = False
        sys.stdout.write("true\n" if same else "false\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
