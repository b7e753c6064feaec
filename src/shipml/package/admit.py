"""Admit a package directory made elsewhere (an export, another registry's version) as a new version.

Nothing in the incoming manifest is trusted. Its files are checked against it (no link, no file it does not list,
every sha256), what they need trust for is judged from the runtime and their bytes, and a package that needs
trust is refused unless the importing user grants it now. The verified bytes are copied, the artefact list is
rebuilt from the copy, and the new manifest records the trust decision made now (who, when, for what), so that
the registry's record of the new manifest seals what is really there.
"""

from __future__ import annotations

from pathlib import Path

from shipml.errors import UnsafeModelError
from shipml.package.artefacts import measure, verify_integrity
from shipml.package.lineage import current_user, now_iso
from shipml.package.loaded import judge_trust, load_package, runtime_for
from shipml.package.manifest import MANIFEST, Manifest, Trust, manifest_digest, read_manifest
from shipml.runtimes.base import TrustNeed


def trust_record(need: TrustNeed, named: list[str] | None = None) -> Trust:
    """The manifest's record of the trust decision made now, by the current user, for ``need``. ``named``: the
    classes a code-running runtime names for the record (pickle: the model's class)."""
    if not need.required:
        return Trust()
    return Trust(required=True, types=list(need.types) or list(named or []), granted_by=current_user(),
                 granted_at=now_iso())


def admit_package(source: Path, target: Path, *, trusted: bool, manifest_sha256: str | None = None) -> Manifest:
    """Copy the package at ``source`` into the new, empty directory ``target`` (verified, loaded and its golden
    sample re-run there) and return its manifest as the new version should record it: artefacts measured on the
    copy, trust as decided now. The caller writes the manifest. ``trusted``: the importing user trusts it.

    ``manifest_sha256``: the manifest's digest as another registry recorded it when shipml saved the version
    there (a copy between registries). Its files are then judged as that registry's loads judge them (sealed):
    a file shipml wrote itself needs no trust in the copy either."""
    manifest = read_manifest(source, manifest_sha256)
    runtime = runtime_for(manifest)
    artefacts = verify_integrity(source, manifest)
    sealed = manifest_sha256 is not None
    need = judge_trust(runtime, artefacts.model_view(), manifest, sealed=sealed)
    if need.required and not trusted:
        raise UnsafeModelError(f"{source.name} holds a package that {need.describe()}; pass --trust"
                               " (trusted=True) if you trust whoever made it", list(need.types) or [runtime.name])
    target.mkdir()
    artefacts.copy_to(target)
    data = manifest.to_json()
    (target / MANIFEST).write_bytes(data)
    # From here on only the private copy is read: what is loaded is what gets in.
    load_package(target, trusted=trusted if need.required else False,
                 manifest_sha256=manifest_digest(data) if sealed else None)
    return manifest.model_copy(update={"artifacts": measure(target), "trust": trust_record(need)})


__all__ = ["admit_package", "trust_record"]
