"""Checks shared by the protocol tests (imported as tests.protocols.protocol_checks)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError


def only_error(excinfo) -> dict:
    """The single pydantic error of a ValidationError (fails if there are several)."""
    errors = excinfo.value.errors()
    assert len(errors) == 1, errors
    return errors[0]


def assert_frozen_round_trip_forbids_extras(model: type[BaseModel], fields: dict) -> None:
    """Valid input builds a model that round-trips, refuses assignment and unknown fields."""
    obj = model(**fields)
    assert model.model_validate(obj.model_dump()) == obj
    name = next(iter(model.model_fields))
    with pytest.raises(ValidationError) as excinfo:
        setattr(obj, name, getattr(obj, name))
    assert (only_error(excinfo)["type"], only_error(excinfo)["loc"]) == ("frozen_instance", (name,))
    with pytest.raises(ValidationError) as excinfo:
        model(**fields, surprise=1)
    assert (only_error(excinfo)["type"], only_error(excinfo)["loc"]) == ("extra_forbidden", ("surprise",))
