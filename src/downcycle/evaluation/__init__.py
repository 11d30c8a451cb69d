"""Evaluation: held-out loss/perplexity/bits per byte and benchmark tasks scored as lm-evaluation-harness
scores them, with all choices of a question packed into one shared-context forward pass.

Entry point: :func:`downcycle.evaluation.run.run_eval` (``downcycle eval``). The task registry is
:data:`downcycle.evaluation.tasks.TASKS`.
"""
