"""Watch the judge manifest of a running job; hand the loop a new, fully checked manifest.

driver/run.py calls `poll()` at every step boundary (cheap: one stat of the file).
When the file's content changes, the new manifest goes through the same checks as at start-up
(schema, import paths, model paths, API key variables, the algorithm's needs). A good manifest is
returned for the loop to swap the judge actors; a bad one is logged with its reason and recorded,
and the run keeps its current judges. Each distinct content is judged once, so a broken file is
reported once, not every step.

The evaluation judge is not swapped mid-run (win rates over a run must use one judge); a change
to `eval` is logged and ignored. A manifest that disappears (deleted or moved away) is logged once,
as a warning, and the run keeps its judges; when a file is back at the path it is read as a change.

An accepted manifest is not trusted yet: its new judges must also pass a trial on real rollouts
before the old ones retire (driver/cluster.py `swap_judges`), or the swap is rejected like a bad
manifest.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from deploy.loading import ConfigError, load_manifest
from driver.plan import check_algorithm_judges, check_manifest
from protocols import JudgeManifest
from protocols.config import SecurityConfig

logger = logging.getLogger("driver")


@dataclass(frozen=True)
class ManifestChange:
    """The outcome of one changed manifest file: `manifest` if accepted, else `reason`."""

    manifest: JudgeManifest | None
    reason: str | None
    digest: str


class ManifestWatcher:
    def __init__(self, path: str | Path, algo: str, current: JudgeManifest, security: SecurityConfig | None = None):
        """`security`: the run config's allow-lists, which every new manifest must keep to."""
        self.path, self.algo, self.current, self.security = Path(path), algo, current, security
        self._stamp = self._stat()
        self._digest = self._read_digest()
        self._missing_reported = False

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def _read_digest(self) -> str | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]
        except FileNotFoundError:
            return None

    def poll(self) -> ManifestChange | None:
        """None when the file is unchanged (or gone: warned about once); else the verdict."""
        stamp = self._stat()
        if stamp is None:
            if not self._missing_reported:
                self._missing_reported = True
                logger.warning(
                    "judge manifest %s is gone (deleted or moved); keeping the current judges. Saving a "
                    "manifest at that path again swaps to it as usual",
                    self.path,
                )
            self._stamp = None  # a file back at the path is read, even with the old mtime and size
            return None
        self._missing_reported = False
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        digest = self._read_digest()
        if digest is None or digest == self._digest:
            return None
        self._digest = digest
        try:
            manifest = load_manifest(str(self.path))
            check_manifest(manifest, str(self.path), self.security)
            check_algorithm_judges(self.algo, manifest, str(self.path))
        except (ConfigError, FileNotFoundError, ValueError) as err:
            logger.warning("judge manifest %s changed but was rejected; keeping the current judges: %s", self.path, err)
            return ManifestChange(manifest=None, reason=str(err), digest=digest)
        if manifest == self.current:
            return None
        if manifest.eval != self.current.eval:
            logger.warning("judge manifest %s changes the eval judge; ignored until the run ends", self.path)
            manifest = manifest.model_copy(update={"eval": self.current.eval})
        self.current = manifest
        return ManifestChange(manifest=manifest, reason=None, digest=digest)
