"""The OpenAPI document of a running server, with request schemas generated from each model's signature.

Each served model gets a record schema (one property per input column: its JSON type, its training range or
categories, whether null is allowed) and request/response schemas built on it, with an example made from the
signature and the reference profile (``package/example.py``: medians and most frequent categories, never a
training row). A model still loading is described generically until it is loaded.
"""

from __future__ import annotations

from typing import Any

import shipml
from shipml.package.example import model_example
from shipml.package.loaded import LoadedModel
from shipml.package.signature import ColumnSpec, Signature
from shipml.spec import DeploymentSpec

_JSON_TYPES = {"int": "integer", "float": "number", "bool": "boolean", "string": "string", "datetime": "string"}

def column_schema(column: ColumnSpec, categories_enum: bool) -> dict[str, Any]:
    """The JSON schema of one input value. Ranges are described, not enforced: the server's input policy
    decides whether an out-of-range value is a warning or an error."""
    schema: dict[str, Any] = {"type": _JSON_TYPES[column.dtype]}
    if column.dtype == "float":
        schema["type"] = ["number", "integer"]
    if column.dtype == "datetime":
        schema["format"] = "date-time"
    if column.categories is not None and categories_enum:
        schema["enum"] = list(column.categories)
    if column.min is not None and column.max is not None:
        schema["description"] = f"seen in training: [{column.min}, {column.max}]"
    if column.nullable:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        schema["type"] = [*types, "null"]
    return schema


def model_schemas(name: str, signature: Signature, categories_enum: bool) -> dict[str, Any]:
    """Component schemas of one model: ``{name}_record``, ``{name}_request``, ``{name}_response``."""
    properties = {c.name: column_schema(c, categories_enum) for c in signature.inputs}
    names = signature.names
    columnar = {c: {"type": "array", "items": properties[c]} for c in names}
    outputs = signature.outputs
    response: dict[str, Any] = {
        "type": "object",
        "required": ["predictions", "model", "version", "request_id"],
        "properties": {
            "predictions": {"type": "array", "items": {}},
            "model": {"type": "string"}, "version": {"type": "string"}, "request_id": {"type": "string"},
            "warnings": {"type": "array", "items": {"$ref": "#/components/schemas/Problem"}},
        },
    }
    if outputs.probabilities:
        response["properties"]["probabilities"] = {"type": "array", "items": {"type": "array",
                                                                                "items": {"type": "number"}}}
        response["properties"]["classes"] = {"type": "array", "items": {}}
    return {
        f"{name}_record": {"type": "object", "properties": properties, "required": names,
                           "additionalProperties": False},
        f"{name}_request": {
            "oneOf": [
                {"type": "object", "required": ["instances"], "properties": {
                    "instances": {"type": "array", "items": {"$ref": f"#/components/schemas/{name}_record"}}}},
                {"type": "object", "required": ["inputs"], "properties": {
                    "inputs": {"type": "object", "properties": columnar, "required": names,
                               "additionalProperties": False}}},
            ],
        },
        f"{name}_response": response,
    }


def openapi_document(spec: DeploymentSpec, models: dict[str, LoadedModel | None]) -> dict[str, Any]:
    """The OpenAPI 3.1 document for the endpoints of ``spec``; ``models`` maps endpoint name to its loaded primary
    version (None while loading)."""
    categories_enum = spec.input_policy.unseen_category == "reject"
    schemas: dict[str, Any] = dict(_COMMON_SCHEMAS)
    paths: dict[str, Any] = {
        "/healthz": {"get": _simple("Liveness", "The process is up.")},
        "/readyz": {"get": _simple("Readiness", "Every model loaded and passed its golden check (else 503).")},
        "/metrics": {"get": _simple("Prometheus metrics", "Text exposition format.", "text/plain")},
        "/models": {"get": _simple("Served models", "Each endpoint, its refs and loaded versions.")},
    }
    for name, model in models.items():
        if model is not None:
            schemas.update(model_schemas(name, model.signature, categories_enum))
            example: dict[str, Any] | None = {"instances": [model_example(model)]}
        else:
            schemas[f"{name}_request"] = {"type": "object"}
            schemas[f"{name}_response"] = {"type": "object"}
            example = None
        predict = _predict_operation(name, example)
        paths[f"/models/{name}/predict"] = {"post": predict}
        paths[f"/models/{name}/versions/{{version}}/predict"] = {"post": {
            **predict, "operationId": f"predict_{name}_version",
            "parameters": [{"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}]}}
        paths[f"/v1/models/{name}:predict"] = {"post": {
            **predict, "operationId": f"predict_{name}_v1", "summary": f"Predict with {name} (KServe v1)"}}
        paths[f"/models/{name}"] = {"get": _simple(f"Describe {name}", "Inputs, outputs and an example body.")}
        paths[f"/v2/models/{name}/infer"] = {"post": _v2_infer_operation(name)}
        paths[f"/v2/models/{name}"] = {"get": _simple(f"{name} metadata (Open Inference Protocol v2)",
                                                      "Inputs and outputs as tensors.")}
    if len(models) == 1:
        only = next(iter(models))
        paths["/predict"] = {"post": {**paths[f"/models/{only}/predict"]["post"], "operationId": "predict"}}
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "shipml", "version": shipml.__version__,
                 "description": "Models served by shipml: " + ", ".join(models)},
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if spec.auth.enabled:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"bearer": []}]
    return document


def _predict_operation(name: str, example: dict[str, Any] | None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{name}_request"}}
    if example is not None:
        media["example"] = example
    return {
        "operationId": f"predict_{name}",
        "summary": f"Predict with {name}",
        "requestBody": {"required": True, "content": {"application/json": media}},
        "responses": {
            "200": {"description": "Predictions", "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{name}_response"}}}},
            **_ERRORS,
        },
    }


def _v2_infer_operation(name: str) -> dict[str, Any]:
    return {
        "operationId": f"infer_{name}_v2",
        "summary": f"Infer with {name} (Open Inference Protocol v2; binary tensor data extension accepted)",
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/V2InferRequest"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        "responses": {"200": {"description": "Output tensors", "content": {"application/json": {
            "schema": {"type": "object"}}}}, **_ERRORS},
    }


def _simple(summary: str, description: str, media: str = "application/json") -> dict[str, Any]:
    return {"summary": summary, "responses": {"200": {"description": description, "content": {media: {}}}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


_ERRORS = {
    "400": _error("Malformed body"),
    "401": _error("No or unknown token"),
    "403": _error("Token lacks the scope"),
    "404": _error("No such model or version"),
    "413": _error("Body or row count over the limit"),
    "415": _error("Content type other than JSON"),
    "422": _error("Input does not match the model's signature; each problem names row, column and rule"),
    "503": _error("Not ready, draining, or queue full (Retry-After)"),
    "504": _error("No answer within the request timeout"),
}

_COMMON_SCHEMAS: dict[str, Any] = {
    "Problem": {"type": "object", "properties": {
        "row": {"type": ["integer", "null"]}, "column": {"type": ["string", "null"]},
        "rule": {"type": "string"}, "message": {"type": "string"}, "severity": {"type": "string"}}},
    "Error": {"type": "object", "required": ["error"], "properties": {
        "error": {"type": "string"}, "request_id": {"type": "string"},
        "problems": {"type": "array", "items": {"$ref": "#/components/schemas/Problem"}},
        "problem_count": {"type": "integer"}}},
    "V2InferRequest": {"type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"}, "parameters": {"type": "object"},
        "inputs": {"type": "array", "items": {"type": "object", "required": ["name", "shape", "datatype"],
                                              "properties": {"name": {"type": "string"},
                                                             "shape": {"type": "array", "items": {"type": "integer"}},
                                                             "datatype": {"type": "string"},
                                                             "data": {"type": "array"}}}},
        "outputs": {"type": "array", "items": {"type": "object"}}}},
}
