"""A local-engine worker scoring a LightGBM model imports LightGBM without scikit-learn (faster start, less
memory); a worker for a scikit-learn model imports what it needs; a process that has LightGBM already is left
as it is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from shipml.jobs.scoring import lean_imports
from shipml.jobs.spec import JobSpec
from tests.jobs.conftest import Saved, mixed_frame, numeric_frame

WORKER = """
import sys
from shipml.jobs.local import _score
from shipml.jobs.sources import plan_parts, list_inputs
from shipml.jobs.spec import JobSpec
job = JobSpec.from_json(sys.argv[1])
part = plan_parts(list_inputs(sys.argv[2], None), 1000)[0]
result = _score(job, part)
assert result.rows_scored == result.rows_read > 0, result
print(sorted(name for name in ("sklearn", "scipy.stats") if name in sys.modules))
"""


def _worker_modules(saved: Saved, data: Path, work: Path) -> str:
    version = saved.registry.get(saved.ref)
    work.mkdir()
    job = JobSpec(str(saved.registry.directory(version)), saved.ref, "k" * 64, str(work),
                  manifest_sha256=version.manifest_sha256)
    done = subprocess.run([sys.executable, "-c", WORKER, job.to_json().decode(), str(data)], capture_output=True,
                          text=True, timeout=120, check=True)
    return done.stdout.strip()


def test_a_lightgbm_worker_imports_no_sklearn(lgb_model: Saved, tmp_path: Path) -> None:
    data = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pandas(numeric_frame(300), preserve_index=False), data)
    assert _worker_modules(lgb_model, data, tmp_path / "work") == "[]"


def test_a_pipeline_worker_imports_what_it_needs(pipeline_model: Saved, tmp_path: Path) -> None:
    data = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pandas(mixed_frame(300), preserve_index=False), data)
    assert "sklearn" in _worker_modules(pipeline_model, data, tmp_path / "work")


def test_nothing_is_blocked_once_lightgbm_is_imported(lgb_model: Saved, tmp_path: Path) -> None:
    version = lgb_model.registry.get(lgb_model.ref)
    job = JobSpec(str(lgb_model.registry.directory(version)), lgb_model.ref, "k" * 64, str(tmp_path))
    lean_imports(job)  # this test process imported lightgbm with its scikit-learn layer: left as it is
    import lightgbm
    import sklearn.base

    assert issubclass(lightgbm.LGBMClassifier, sklearn.base.BaseEstimator)
