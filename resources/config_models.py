"""Dagster config classes derived from the ``seke`` dataclasses, so each concept is defined once.

``seke`` holds the settings of the science as plain dataclasses (``SamplingConfig``,
``VLLMConfig``, …) with defaults and validation. The Dagster ``Config``/``ConfigurableResource``
that exposes them in the UI is generated from the dataclass here: same names, types, defaults
and help texts (from each field's ``metadata["help"]``), plus whatever Dagster-only fields a
caller adds. Changing a default in ``seke`` changes the UI; nothing is kept by hand twice.
"""

import dataclasses
import typing
from typing import Any

from pydantic import Field, create_model


def dataclass_fields(dc: type, exclude: tuple[str, ...] = ()) -> dict[str, tuple[Any, Any]]:
    """``{name: (type, pydantic Field)}`` of a dataclass, for :func:`pydantic.create_model`."""
    hints = typing.get_type_hints(dc)
    out: dict[str, tuple[Any, Any]] = {}
    for f in dataclasses.fields(dc):
        if f.name in exclude or not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = ...
        out[f.name] = (hints[f.name], Field(default, description=f.metadata.get("help")))
    return out


def derived(name: str, base: type, dc: type, doc: str, /, exclude: tuple[str, ...] = (),
            **extra: tuple[Any, Any]) -> type:
    """A subclass of ``base`` (a Dagster ``Config`` or ``ConfigurableResource`` carrying the
    methods) whose fields are the dataclass's fields (minus ``exclude``) plus ``extra``."""
    model = create_model(name, __base__=base, __doc__=doc, **dataclass_fields(dc, exclude), **extra)
    model.__module__ = base.__module__
    return model


def values_for(dc: type, model: Any) -> dict[str, Any]:
    """The dataclass's fields' values taken from a derived config/resource instance."""
    names = {f.name for f in dataclasses.fields(dc) if f.init}
    return {k: v for k, v in model.model_dump().items() if k in names}
