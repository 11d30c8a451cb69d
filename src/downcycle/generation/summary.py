"""What ``downcycle generate`` says after the text: notes, then the prompt and new token counts,
why it stopped and the speed (on stderr, so that stdout is the generated text alone)."""

from __future__ import annotations

from typing import Any

__all__ = ["summary"]


def summary(result: Any) -> str:
    """The summary of a ``GenerateResult``."""
    chat = ", chat template" if result.chat else ""
    return "\n".join([f"  note: {note}" for note in result.notes] + [
        f"[{len(result.prompt_ids)} prompt tokens{chat}, {len(result.tokens)} new, stop: {result.stop}, "
        f"{result.tokens_per_second:.1f} tokens/s]"])
