"""Config files' validation errors: one shape of message for the catalog, allocation and budgets files."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from streams.core.config_errors import describe_validation_error


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    weight: float = Field(default=1.0, gt=0)


class File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entries: list[Entry]
    tags: list[str] = []

    @field_validator("tags")
    @classmethod
    def unique(cls, tags: list[str]) -> list[str]:
        repeated = [f"[{i}]: listed twice (got {tag!r})" for i, tag in enumerate(tags) if tag in tags[:i]]
        if repeated:
            raise ValueError("\n".join(repeated))
        return tags


def rendered(doc: dict) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        File.model_validate(doc)
    return describe_validation_error(caught.value, "f.yaml").splitlines()


def test_each_line_names_the_file_the_key_path_and_the_value() -> None:
    assert rendered({"entries": [{"name": "a"}, {"name": "", "weight": -0.5, "colour": "red"}]}) == [
        "f.yaml: entries[1].name: must not be empty (got '')",
        "f.yaml: entries[1].weight: must be > 0 (got -0.5)",
        "f.yaml: entries[1].colour: is not a known key (got 'red')",
    ]


def test_a_missing_key_or_a_bad_entry_shows_no_value() -> None:
    assert rendered({"entries": [{}], "other": {"a": 1}}) == [
        "f.yaml: entries[0].name: is required",
        "f.yaml: other: is not a known key",
    ]


def test_our_own_checks_join_their_key_path_to_the_failing_object() -> None:
    assert rendered({"entries": [], "tags": ["x", "y", "x", "x"]}) == [
        "f.yaml: tags[2]: listed twice (got 'x')",
        "f.yaml: tags[3]: listed twice (got 'x')",
    ]
