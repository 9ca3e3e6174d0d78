"""/openapi.json: valid OpenAPI 3.0, the seed's mistakes corrected, Turnout's surface described."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from tests.support import app_client, config_from

SEED = Path("/work/shared/seed/openapi.json")
MOCK_GROUPS = """
[[models]]
name = "chat-a"
  [[models.deployments]]
  provider = "mock"
[[models]]
name = "embed-b"
  [[models.deployments]]
  provider = "mock"
"""


def document() -> dict:
    return json.loads((resources.files("router") / "openapi.json").read_text())


def schemas() -> dict:
    return document()["components"]["schemas"]


def test_document_is_valid_openapi_3_0():
    spec = document()
    assert spec["openapi"].startswith("3.0.")
    validate(spec)


@pytest.mark.skipif(not SEED.exists(), reason="the seed lives beside the contract")
def test_the_seed_itself_is_not_valid_which_is_why_it_was_corrected():
    with pytest.raises(OpenAPIValidationError):
        validate(json.loads(SEED.read_text()))


def test_title_is_turnouts_own():
    assert document()["info"]["title"] == "Turnout"


def test_usage_is_top_level_in_the_response_not_inside_choices():
    response = schemas()["ChatCompletionsResponse"]
    assert response["properties"]["usage"] == {"$ref": "#/components/schemas/Usage"}
    choice = response["properties"]["choices"]["items"]
    assert "usage" not in choice["properties"]
    assert "usage" not in choice["required"]


def test_function_call_is_a_one_of_string_or_object():
    function_call = schemas()["ChatCompletionsRequest"]["properties"]["function_call"]
    assert "type" not in function_call
    kinds = [s.get("type") or s.get("$ref") for s in function_call["oneOf"]]
    assert kinds == ["string", "#/components/schemas/FunctionCallOption"]


def test_message_content_is_a_string_or_an_array_of_parts():
    content = schemas()["ChatMessage"]["properties"]["content"]
    assert content["oneOf"][0] == {"type": "string"}
    assert content["oneOf"][1]["items"] == {"$ref": "#/components/schemas/ContentPart"}
    assert schemas()["ChatMessage"]["required"] == ["role"]


def test_every_route_is_described():
    paths = document()["paths"]
    for path in ("/v1/chat/completions", "/chat/completions", "/v1/embeddings", "/embeddings",
                 "/v1/models", "/models", "/health/liveness", "/health/readiness", "/metrics",
                 "/admin/status", "/openapi.json", "/"):
        assert path in paths, path


@pytest.mark.parametrize("name", ["ChatCompletionsRequest", "EmbeddingsRequest"])
def test_caching_and_cache_controls_are_request_fields(name):
    properties = schemas()[name]["properties"]
    assert properties["caching"]["type"] == "boolean"
    assert properties["cache"] == {"$ref": "#/components/schemas/CacheControls"}
    controls = schemas()["CacheControls"]["properties"]
    assert set(controls) == {"use-cache", "ttl", "s-maxage", "no-cache", "no-store", "namespace"}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/chat/completions", "/v1/embeddings",
                                  "/embeddings"])
def test_every_contract_error_status_has_the_error_shape(path):
    responses = document()["paths"][path]["post"]["responses"]
    for status in ("400", "401", "404", "413", "429", "502", "503", "504"):
        schema = responses[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, status
    error = schemas()["ErrorResponse"]["properties"]["error"]
    assert error["required"] == ["message", "type", "param", "code"]


def test_streaming_answer_is_documented_as_text_event_stream():
    ok = document()["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]
    assert set(ok["content"]) == {"application/json", "text/event-stream"}


async def test_served_document_lists_the_configured_groups_as_models():
    async with app_client(config_from(MOCK_GROUPS)) as client:
        response = await client.get("/openapi.json")
    served = response.json()
    validate(served)
    for name in ("ChatCompletionsRequest", "EmbeddingsRequest"):
        assert served["components"]["schemas"][name]["properties"]["model"]["enum"] == [
            "chat-a", "embed-b"]
    assert served["paths"] == document()["paths"]
