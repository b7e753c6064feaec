"""Request bodies from a real model's signature and golden sample, in each protocol."""

from __future__ import annotations

from pathlib import Path

import httptools
import numpy as np
import orjson
import pandas as pd
import pytest

import shipml
from shipml.errors import NotFoundError, ServiceUnavailable, SpecError
from shipml.loadtest.payloads import (
    Column,
    ModelInfo,
    build_bodies,
    draw_value,
    encode_request,
    generate_rows,
    model_info_from_registry,
    model_info_from_server,
    read_payload_file,
    request_path,
    served_model_name,
)
from shipml.protocol.v2 import decode_infer_request
from tests.loadtest.tiny_server import running


@pytest.fixture
def registry(churn_registry: Path) -> Path:
    return churn_registry / "registry"


def test_signature_and_golden_rows_come_from_the_registry(registry: Path) -> None:
    info = model_info_from_registry("churn:1.1.0", registry)
    model = shipml.load_model("churn:1.1.0", registry=registry)
    assert info.name == "churn" and [c.name for c in info.inputs] == ["age", "income", "state"]
    assert [c.dtype for c in info.inputs] == ["int", "float", "string"]
    assert info.inputs[2].categories == ("CA", "NY", "TX")
    golden = orjson.loads((model.path / "golden.json").read_bytes())["inputs"]
    assert len(info.examples) == len(golden["age"]) > 0
    assert info.examples[0] == {"age": golden["age"][0], "income": golden["income"][0], "state": golden["state"][0]}
    assert model_info_from_registry(str(model.path), served_as="churn-ep").name == "churn-ep"  # a package dir
    with pytest.raises(NotFoundError, match="nope"):
        model_info_from_registry("nope", registry)


def test_generated_rows_fit_the_signature(registry: Path) -> None:
    info = model_info_from_registry("churn", registry)
    rows = generate_rows(info, 300, seed=1)
    assert rows[: len(info.examples)] == list(info.examples)  # every golden row is sent
    drawn = [r for r in rows if r not in info.examples]
    assert len(drawn) > 50  # and many rows drawn within the training ranges
    report = shipml.load_model("churn", registry=registry).validate(pd.DataFrame(rows))
    assert list(report) == []  # no error, and no out-of-range or unseen-category warning either
    assert generate_rows(info, 50, seed=1) == rows[:50]  # deterministic for a seed


@pytest.mark.parametrize("protocol", ["simple", "v1", "v2"])
def test_bodies_in_each_protocol_decode_to_valid_rows(registry: Path, protocol: str) -> None:
    info = model_info_from_registry("churn", registry)
    model = shipml.load_model("churn", registry=registry)
    bodies = build_bodies(info, protocol, rows=3, pool=8, seed=2)  # type: ignore[arg-type]
    assert len(bodies) == 8 and len(set(bodies)) == 8
    for body in bodies:
        if protocol == "v2":
            decoded = decode_infer_request(body, None, model.signature)
            assert isinstance(decoded.columns, dict) and len(decoded.columns["age"]) == 3
            assert decoded.columns["age"].dtype == np.int64 and decoded.columns["state"].dtype == object
            frame = pd.DataFrame(decoded.columns)
        else:
            frame = pd.DataFrame(orjson.loads(body)["instances"])
            assert len(frame) == 3
        assert model.validate(frame).ok
    v2 = orjson.loads(bodies[0]) if protocol == "v2" else None
    if v2 is not None:
        assert [(t["name"], t["datatype"], t["shape"]) for t in v2["inputs"]] == [
            ("age", "INT64", [3]), ("income", "FP64", [3]), ("state", "BYTES", [3])]


def test_routes_per_protocol() -> None:
    assert request_path("simple", "churn") == "/models/churn/predict"
    assert request_path("v1", "churn") == "/v1/models/churn:predict"
    assert request_path("v2", "a b") == "/v2/models/a%20b/infer"
    with pytest.raises(SpecError, match="unknown protocol 'v3'"):
        request_path("v3", "churn")  # type: ignore[arg-type]


def test_values_are_drawn_within_what_training_saw() -> None:
    rng = np.random.default_rng(0)
    when = Column("when", "datetime", min="2024-01-01T00:00:00", max="2024-01-02T00:00:00")
    stamps = [pd.Timestamp(draw_value(when, rng)) for _ in range(50)]
    assert all(pd.Timestamp("2024-01-01") <= s <= pd.Timestamp("2024-01-02") for s in stamps)
    assert {draw_value(Column("flag", "bool"), rng) for _ in range(50)} == {True, False}
    ints = [draw_value(Column("n", "int", min=2.0, max=4.0), rng) for _ in range(60)]
    assert set(ints) == {2, 3, 4} and all(isinstance(v, int) for v in ints)
    assert draw_value(Column("x", "float", min=1.5, max=1.5), rng) == 1.5
    assert draw_value(Column("free", "string"), rng, ["seen"]) == "seen"  # no categories: from the examples
    assert draw_value(Column("x", "float"), rng) == 0.0  # nothing known at all
    with pytest.raises(SpecError, match="unknown dtype 'complex'"):
        Column.from_dict({"name": "z", "dtype": "complex"})
    with pytest.raises(SpecError, match="no input columns"):
        ModelInfo("m", (), ())
    with pytest.raises(SpecError, match="rows per request"):
        build_bodies(ModelInfo("m", (Column("x", "float"),), ()), rows=0)


def test_model_info_from_the_server() -> None:
    described = {"name": "m", "ready": True,
                 "inputs": [{"name": "x", "dtype": "float", "nullable": False, "min": 0.0, "max": 1.0,
                             "categories": None}, {"name": "c", "dtype": "string", "categories": ["a", "b"]}],
                 "example": {"instances": [{"x": 0.5, "c": "a"}]}}
    loading = {"name": "n", "ready": False, "versions": []}
    models = {"models": [{"name": "m"}, {"name": "n"}]}
    with running(get_json={"/models/m": described, "/models/n": loading, "/models": models}) as server:
        info = model_info_from_server(server.url, "m", token="s3cret")
        assert [c.name for c in info.inputs] == ["x", "c"] and info.examples == ({"x": 0.5, "c": "a"},)
        assert server.headers_seen[-1]["authorization"] == "Bearer s3cret"
        with pytest.raises(ServiceUnavailable, match="'n' is not ready yet"):
            model_info_from_server(server.url, "n")
        with pytest.raises(NotFoundError, match=r"answered 404: no route /models/zz.*pass --ref REF"):
            model_info_from_server(server.url, "zz")
        with pytest.raises(SpecError, match=r"serves 2 models \(m, n\): pass --model"):
            served_model_name(server.url)
    with running(get_json={"/models": {"models": [{"name": "only"}]}}) as server:
        assert served_model_name(server.url + "/") == "only"


def test_encoded_requests_are_valid_http_and_refuse_injection() -> None:
    raw = encode_request("POST", "/p", "h:1", b'{"a":1}', {"authorization": "Bearer t"})
    seen: dict[str, object] = {}

    class Sink:
        def on_url(self, url: bytes) -> None:
            seen["url"] = url

        def on_header(self, name: bytes, value: bytes) -> None:
            seen[name.decode().lower()] = value.decode()

        def on_body(self, body: bytes) -> None:
            seen["body"] = body

    httptools.HttpRequestParser(Sink()).feed_data(raw)
    assert seen["url"] == b"/p" and seen["body"] == b'{"a":1}' and seen["authorization"] == "Bearer t"
    assert seen["content-length"] == "7" and seen["host"] == "h:1"
    with pytest.raises(SpecError, match="line break"):
        encode_request("POST", "/p", "h", b"{}", {"authorization": "Bearer t\r\nx-evil: 1"})
    with pytest.raises(SpecError, match="must start with '/'"):
        encode_request("POST", "/a b", "h", b"{}")
    with pytest.raises(SpecError, match="cannot carry") as caught:
        encode_request("POST", "/p", "h", b"{}", {"authorization": "Bearer tök€n"})
    assert "tök€n" not in str(caught.value)


def test_payload_files(tmp_path: Path) -> None:
    good = tmp_path / "body.json"
    good.write_text('{"instances": [{"x": 1}]}')
    assert read_payload_file(good) == good.read_bytes()
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(SpecError, match="not valid JSON"):
        read_payload_file(bad)
    with pytest.raises(NotFoundError, match="no payload file"):
        read_payload_file(tmp_path / "missing.json")
