"""The fixed structured-output workload the structured-output benchmarks share: JSON schemas with one
valid instance each, plus a regex, a choice and a Lark grammar.

The schemas cover what the issue asks validity for: nested objects, arrays with bounds, enums,
numbers with bounds and string patterns. Each instance validates against its schema (checked by
``tests/bench/test_structured_schemas.py``), so a library can be driven along it token by token.
"""

from __future__ import annotations

from typing import Any

SCHEMAS: dict[str, dict[str, Any]] = {
    "person": {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 24}, "age": {"type": "integer", "minimum": 0,
                                                                            "maximum": 130}},
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    "order": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
            "status": {"enum": ["pending", "shipped", "delivered"]},
            "items": {
                "type": "array", "minItems": 1, "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {"sku": {"type": "string", "maxLength": 12},
                                   "qty": {"type": "integer", "minimum": 1, "maximum": 99},
                                   "price": {"type": "number", "minimum": 0, "maximum": 10000}},
                    "required": ["sku", "qty", "price"],
                    "additionalProperties": False,
                },
            },
        },
        "required": ["id", "status", "items"],
        "additionalProperties": False,
    },
    "weather": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 32},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "temperature": {"type": "number", "minimum": -90, "maximum": 60},
            "forecast": {"type": "array", "maxItems": 4, "items": {"type": "string", "maxLength": 16}},
        },
        "required": ["city", "unit", "temperature", "forecast"],
        "additionalProperties": False,
    },
    "event": {
        "type": "object",
        "properties": {
            "title": {"type": "string", "minLength": 1, "maxLength": 40},
            "date": {"type": "string", "pattern": "^20[0-9]{2}-[01][0-9]-[0-3][0-9]$"},
            "attendees": {"type": "array", "minItems": 1, "maxItems": 4, "items": {
                "type": "object",
                "properties": {"name": {"type": "string", "maxLength": 20}, "role": {"enum": ["host", "guest"]}},
                "required": ["name", "role"], "additionalProperties": False}},
            "public": {"type": "boolean"},
        },
        "required": ["title", "date", "attendees", "public"],
        "additionalProperties": False,
    },
}

# one valid instance per schema (what a library is driven along in bench_grammar_libs)
INSTANCES: dict[str, Any] = {
    "person": {"name": "Ada Lovelace", "age": 36},
    "order": {"id": "ABC-1234", "status": "shipped",
              "items": [{"sku": "pen-blue", "qty": 3, "price": 1.25}, {"sku": "ink", "qty": 1, "price": 9.5}]},
    "weather": {"city": "Paris", "unit": "celsius", "temperature": 21.5, "forecast": ["sunny", "cloudy"]},
    "event": {"title": "Launch review", "date": "2025-06-14",
              "attendees": [{"name": "Grace", "role": "host"}, {"name": "Linus", "role": "guest"}], "public": True},
}

# a prompt per schema that asks the model for that kind of object
PROMPTS: dict[str, str] = {
    "person": "Describe a famous scientist as JSON with their name and age.",
    "order": "Give an example web-shop order as JSON: id, status and items with sku, qty and price.",
    "weather": "Report today's weather in Paris as JSON: city, unit, temperature and a short forecast.",
    "event": "Describe a team meeting as JSON: title, date, attendees with roles, and whether it is public.",
}

REGEX = r"[0-9]{3}-[0-9]{3}-[0-9]{4}"
CHOICE = ["positive", "negative", "neutral"]
LARK = r"""
start: expr
expr: term (("+" | "-") term)*
term: NUMBER (("*" | "/") NUMBER)*
NUMBER: /[0-9]{1,4}/
"""
