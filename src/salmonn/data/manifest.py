"""The manifest reader's old address: it is `salmonn.manifest` (the core reads manifests for `salmonn infer
--manifest`). Kept while scripts/mini imports `salmonn.data.manifest.read_manifest`; new code imports salmonn.manifest.
"""

from salmonn.manifest import ManifestError, iter_records, read_manifest

__all__ = ["ManifestError", "iter_records", "read_manifest"]
