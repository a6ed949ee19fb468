"""Tab completion on a terminal: the command words, then the aliases seen so far after a command
whose first argument is an alias."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prompt_toolkit.completion import Completer, WordCompleter

if TYPE_CHECKING:
    from prompt_toolkit.completion import CompleteEvent, Completion
    from prompt_toolkit.document import Document

__all__ = ["ShellCompleter"]


class ShellCompleter(Completer):
    """Command words first; then, after a command that takes an alias, the aliases seen so far."""

    def __init__(
        self, aliases: Callable[[], list[str]], commands: Iterable[str], alias_commands: frozenset[str]
    ) -> None:
        self._commands = WordCompleter(list(commands), ignore_case=True)
        self._aliases = WordCompleter(aliases, WORD=True)
        self._alias_commands = alias_commands

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        before = document.text_before_cursor
        words = before.split()
        in_word = bool(before) and not before[-1].isspace()
        if not words or (len(words) == 1 and in_word):
            yield from self._commands.get_completions(document, complete_event)
        elif words[0].upper() in self._alias_commands and len(words) == (2 if in_word else 1):
            yield from self._aliases.get_completions(document, complete_event)
