"""The YAML 1.2 parser (ruamel.yaml) that reads JSON files, with a node budget and a depth
limit on its composer (:mod:`.parse` gives the budget and builds the documents).

A module of its own so that ruamel.yaml, slow to import, is imported only when a JSON file is
read (:func:`.parse.parse_json_like` imports this module then), not by every command.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ruamel.yaml import YAML as RuamelYAML
from ruamel.yaml.composer import Composer as RuamelComposer
from ruamel.yaml.error import YAMLError as RuamelError


class Budget(Protocol):
    """Counts a file's nodes and nesting; raises when either goes past its limit."""

    def enter(self, mark: Any) -> None: ...

    def leave(self) -> None: ...

#: ruamel.yaml's exceptions for bad input (MarkedYAMLError is one of them).
RUAMEL_ERRORS: tuple[type[Exception], ...] = (RuamelError,)


class _GuardedRuamelComposer(RuamelComposer):
    """ruamel.yaml's composer with a node budget and a depth limit (its own raises late)."""

    new_budget: Callable[[], Budget]  # set on the subclass json_parser makes

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self.budget = self.new_budget()
        self.warn_double_anchors = False  # a redefined anchor is valid YAML, not a warning

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.budget.enter(self.parser.peek_event().start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self.budget.leave()


def json_parser(new_budget: Callable[[], Budget]) -> Any:
    """A safe, pure-Python YAML 1.2 parser whose composer takes a fresh ``new_budget()``."""

    class Composer(_GuardedRuamelComposer):
        pass

    Composer.new_budget = staticmethod(new_budget)
    parser = RuamelYAML(typ="safe", pure=True)
    parser.Composer = Composer
    return parser
