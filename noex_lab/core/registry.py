"""`Registry`: node-local names for processes; a name disappears when its process exits."""

from __future__ import annotations

from .errors import AlreadyRegisteredError, InvalidArgumentError, NotRegisteredError
from .refs import ProcessRef


class NameTable:
    """The names of one node (internal; `Registry` is the facade)."""

    def __init__(self) -> None:
        self._by_name: dict[str, ProcessRef] = {}

    def register(self, name: str, ref: ProcessRef) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"a registered name must be a non-empty string, not {name!r}")
        owner = self._by_name.get(name)
        if owner is not None and owner != ref:
            raise AlreadyRegisteredError(name, owner)
        self._by_name[name] = ref

    def unregister(self, name: str) -> ProcessRef | None:
        return self._by_name.pop(name, None)

    def whereis(self, name: str) -> ProcessRef | None:
        return self._by_name.get(name)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def drop_ref(self, name: str | None, ref: ProcessRef) -> None:
        if name is not None and self._by_name.get(name) == ref:
            del self._by_name[name]


class Registry:
    """Facade over the current node's local names."""

    @staticmethod
    def register(name: str, ref: ProcessRef) -> None:
        """Give a local process a name; raises `AlreadyRegisteredError` if it is taken."""
        from .node import current_node

        current_node().register_name(name, ref)

    @staticmethod
    def unregister(name: str) -> None:
        from .node import current_node

        current_node().unregister_name(name)

    @staticmethod
    def whereis(name: str) -> ProcessRef | None:
        from .node import current_node

        return current_node().names.whereis(name)

    @staticmethod
    def lookup(name: str) -> ProcessRef:
        ref = Registry.whereis(name)
        if ref is None:
            raise NotRegisteredError(name)
        return ref

    @staticmethod
    def names() -> list[str]:
        from .node import current_node

        return current_node().names.names()
