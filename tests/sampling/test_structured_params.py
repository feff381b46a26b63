"""StructuredOutputsParams: exactly one constraint, each value's shape checked naming the field, dict round trips."""

from __future__ import annotations

import dataclasses
import json

import bastion
import pytest
from bastion.sampling import SamplingParams, StructuredOutputsParams


def test_exported_where_vllm_users_look() -> None:
    assert bastion.StructuredOutputsParams is StructuredOutputsParams
    assert "StructuredOutputsParams" in bastion.__all__


@pytest.mark.parametrize(("fields", "kind"), [
    ({"json": {"type": "object"}}, "json"),
    ({"json": '{"type": "integer"}'}, "json"),
    ({"regex": "[a-z]+"}, "regex"),
    ({"choice": ["yes", "no"]}, "choice"),
    ({"grammar": 'start: "a"'}, "grammar"),
    ({"json_object": True}, "json_object"),
])
def test_each_kind(fields: dict, kind: str) -> None:
    params = StructuredOutputsParams(**fields)
    assert params.kind == kind
    assert isinstance(params.spec, str) and params.spec


@pytest.mark.parametrize(("fields", "message"), [
    ({}, "set exactly one of .* \\(got none\\)"),
    ({"json": {"type": "object"}, "regex": "a"}, "got json, regex"),
    ({"regex": "a", "json_object": True}, "got regex, json_object"),
    ({"json": "{not json"}, "structured_outputs.json: not valid JSON"),
    ({"json": [1, 2]}, "structured_outputs.json must be a JSON schema"),
    ({"json": "[1, 2]"}, "structured_outputs.json: a JSON schema is an object"),
    ({"json": {"x": float("nan")}}, "structured_outputs.json: not JSON-serialisable"),
    ({"json": {"x": object()}}, "structured_outputs.json: not JSON-serialisable"),
    ({"regex": ""}, "structured_outputs.regex must be a non-empty str"),
    ({"regex": 3}, "structured_outputs.regex must be a non-empty str"),
    ({"grammar": "  "}, "structured_outputs.grammar must be a non-empty str"),
    ({"choice": []}, "structured_outputs.choice must be a non-empty list"),
    ({"choice": "yes"}, "structured_outputs.choice must be a non-empty list"),
    ({"choice": ["a", ""]}, "structured_outputs.choice\\[1\\] must be a non-empty str"),
    ({"choice": ["a", 2]}, "structured_outputs.choice\\[1\\]"),
    ({"json_object": "yes"}, "structured_outputs.json_object must be a bool"),
])
def test_bad_shapes_name_the_field(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StructuredOutputsParams(**fields)


def test_the_callers_values_are_copied() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    choices = ["x", "y", "x"]
    params = StructuredOutputsParams(json=schema)
    schema["properties"]["b"] = {"type": "integer"}
    assert "b" not in params.json["properties"] and '"b"' not in params.spec
    listed = StructuredOutputsParams(choice=choices)
    choices.append("z")
    assert listed.choice == ["x", "y"]  # duplicates dropped, order kept


def test_property_order_is_kept_in_the_spec() -> None:
    params = StructuredOutputsParams(json={"properties": {"z": {}, "a": {}}})
    assert params.spec.index('"z"') < params.spec.index('"a"')
    assert params.schema == {"properties": {"z": {}, "a": {}}}


def test_sampling_params_take_it_or_a_dict_of_it() -> None:
    typed = SamplingParams(structured_outputs=StructuredOutputsParams(regex="[0-9]+"))
    from_dict = SamplingParams(structured_outputs={"regex": "[0-9]+"})
    assert typed.structured_outputs == from_dict.structured_outputs
    assert SamplingParams().structured_outputs is None
    with pytest.raises(ValueError, match="structured_outputs: unknown field"):
        SamplingParams(structured_outputs={"regexp": "a"})
    with pytest.raises(ValueError, match="structured_outputs must be StructuredOutputsParams"):
        SamplingParams(structured_outputs="json")


def test_asdict_round_trips_through_json() -> None:
    """What the Gateway's audit record and the job store keep: plain JSON, rebuilt into the same params."""
    params = SamplingParams(max_tokens=7, structured_outputs=StructuredOutputsParams(json={"type": "object"}))
    as_json = json.loads(json.dumps(dataclasses.asdict(params)))
    assert as_json["structured_outputs"] == {"json": {"type": "object"}, "regex": None, "choice": None,
                                             "grammar": None, "json_object": False}
    rebuilt = SamplingParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in as_json.items()})
    assert rebuilt.structured_outputs == params.structured_outputs
    assert dataclasses.replace(params, max_tokens=3).structured_outputs == params.structured_outputs


def test_params_with_a_constraint_hash() -> None:
    """Frozen dataclasses hash their fields; a schema dict or a choice list would not, so the constraint
    hashes by what it means."""
    a = SamplingParams(structured_outputs={"json": {"type": "object"}})
    b = SamplingParams(structured_outputs={"json": {"type": "object"}})
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert hash(StructuredOutputsParams(choice=["x"])) != hash(StructuredOutputsParams(regex="x"))
