"""A tiny name → factory registry shared by backbones, heads and detectors.
Adding a component is one file and one line: decorate its factory with ``@REGISTRY.register("name")``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from faceforge.errors import FaceforgeError, did_you_mean

T = TypeVar("T")


def check_options(
    what: str, given: Iterable[str], accepted: Iterable[str], noun: str = "option", prefix: str = ""
) -> None:
    """Raise a one-line :class:`FaceforgeError` for the first of ``given`` not in ``accepted``.

    The message names ``what`` and the key, suggests the nearest accepted name and lists them all:
    ``head 'arcface': unknown option 'margn' (did you mean 'margin'?); accepted: margin, scale``.
    ``prefix`` is written before the unknown key (a config path such as ``model.backbone.``).
    """
    ok = list(accepted)
    for key in given:
        if key not in ok:
            raise FaceforgeError(
                f"{what}: unknown {noun} {prefix + key!r}{did_you_mean(key, ok)}; "
                f"accepted: {', '.join(ok) or '(none)'}"
            )


class Registry(Generic[T]):
    """Maps names to factories; unknown names fail with the list of known ones and a did-you-mean."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator that registers ``fn`` under ``name`` (names are unique)."""

        def deco(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = fn
            return fn

        return deco

    def get(self, name: str) -> Callable[..., T]:
        """Return the factory for ``name`` or raise a :class:`FaceforgeError` listing known names."""
        try:
            return self._factories[name]
        except KeyError:
            known = ", ".join(sorted(self._factories))
            raise FaceforgeError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self._factories)}; known: {known}"
            ) from None

    def create(self, name: str, **kwargs: Any) -> T:
        """Build the component registered as ``name`` with keyword arguments."""
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
