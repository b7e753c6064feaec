"""A batch job resolves a registry ref once, in the parent, and carries the manifest's recorded sha256 to every
worker: a manifest edited in the registry is refused by the parent and by a worker alike."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from shipml.errors import IntegrityError
from shipml.jobs import predict_file, scoring
from shipml.jobs.spec import JobSpec
from tests.jobs.conftest import Saved, numeric_frame, write


def edit_description(path: Path) -> None:
    manifest = orjson.loads((path / "shipml.json").read_bytes())
    manifest["description"] = "edited in place"
    (path / "shipml.json").write_bytes(orjson.dumps(manifest))


def test_the_job_carries_the_recorded_digest_to_its_workers(lgb_model: Saved, tmp_path: Path) -> None:
    data = write(numeric_frame(50).drop(columns="id"), tmp_path / "in.parquet")
    seen: list[JobSpec] = []

    class Progress(io.StringIO):
        def write(self, text: str) -> int:  # the first line comes once the job's spec is in its work directory
            if not seen:
                seen.extend(JobSpec.from_json(p.read_bytes()) for p in tmp_path.glob(".out.parquet.*/job.json"))
            return super().write(text)

    report = predict_file("lgb", data, tmp_path / "out.parquet", registry=lgb_model.registry, workers=1,
                          progress=Progress())
    assert report.rows_scored == 50
    mv = lgb_model.registry.get("lgb")
    assert len(seen) == 1 and seen[0].manifest_sha256 == mv.manifest_sha256 is not None
    spec = JobSpec(str(mv.path), mv.ref, "k", str(tmp_path / "work"), manifest_sha256=mv.manifest_sha256)
    assert JobSpec.from_json(spec.to_json()).manifest_sha256 == mv.manifest_sha256
    scoring.forget()
    assert scoring.model_for(spec).version == "1.0.0"
    scoring.forget()
    edit_description(mv.path)  # after the parent resolved it, before a worker loads it
    with pytest.raises(IntegrityError, match="does not match"):
        scoring.model_for(spec)
    scoring.forget()


def test_a_job_on_an_edited_manifest_is_refused_before_it_starts(lgb_model: Saved, tmp_path: Path) -> None:
    data = write(numeric_frame(50).drop(columns="id"), tmp_path / "in.parquet")
    edit_description(lgb_model.registry.get("lgb").path)
    with pytest.raises(IntegrityError) as exc:
        predict_file("lgb", data, tmp_path / "out.parquet", registry=lgb_model.registry, workers=1, quiet=True)
    assert "lgb:1.0.0" in str(exc.value) and "\n" not in str(exc.value)
    assert not (tmp_path / "out.parquet").exists()
