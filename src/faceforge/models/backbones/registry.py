"""The backbone registry: ``@register_model("name")`` (:func:`register_model`) on a factory,
``create_model("name", **kw)`` (:func:`create_model`) to build, :func:`list_models` to list; names
starting with ``timm/`` go to a prefix handler (:func:`register_prefix`). Details: docs/backbones.md,
"Registry".
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from faceforge.errors import FaceforgeError
from faceforge.registry import Registry, check_options

__all__ = ["MODELS", "create_model", "list_models", "register_model", "register_prefix"]

# prefix (e.g. "timm/") -> handler(rest_of_name, **kwargs) -> nn.Module
_PREFIXES: dict[str, Callable[..., nn.Module]] = {}


class _BackboneRegistry(Registry[nn.Module]):
    """A :class:`Registry` that also resolves prefixed names (``timm/<name>``) to their handler."""

    def get(self, name: str) -> Callable[..., nn.Module]:
        for prefix, handler in _PREFIXES.items():
            if isinstance(name, str) and name.startswith(prefix) and len(name) > len(prefix):
                return functools.partial(handler, name[len(prefix) :])
        return super().get(name)

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str) and any(name.startswith(p) and len(name) > len(p) for p in _PREFIXES):
            return True
        return super().__contains__(name)


MODELS: Registry[nn.Module] = _BackboneRegistry("backbone")


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a backbone factory under ``name`` (e.g. ``@register_model("iresnet50")``)."""
    return MODELS.register(name)


def register_prefix(prefix: str, handler: Callable[..., nn.Module]) -> None:
    """Route every name starting with ``prefix`` to ``handler(rest, **kwargs)`` (used for ``timm/``)."""
    _PREFIXES[prefix] = handler


def list_models() -> list[str]:
    """Sorted names of all registered backbones (``timm/<name>`` wrappers are not enumerated)."""
    return MODELS.names()


def _check_kwargs(name: str, fn: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """Raise a :class:`FaceforgeError` for keyword arguments ``fn`` does not accept."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [
        p.name
        for p in params.values()
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    check_options(f"backbone {name!r}", kwargs, accepted, noun="argument")


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the backbone registered as ``name``.

    Unknown names raise :class:`FaceforgeError` listing the known names; unknown keyword arguments
    raise one listing the factory's accepted keyword names (with a did-you-mean).
    """
    if not isinstance(name, str):
        raise FaceforgeError(f"backbone name must be a string, got {name!r}")
    fn = MODELS.get(name)  # prefixed names give a partial with **kwargs, so no check below
    _check_kwargs(name, fn, kwargs)
    return fn(**kwargs)
