"""Small resources for where things live: the review folder, the bundled knowledge version, the
labelled dev data. Resources (not run config defaults) so the environment is read in one place
(:mod:`resources.settings`) and the UI shows the values a run used."""

import os
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from resources.config_models import derived, values_for
from seke.review_qa import ReviewPolicy


class _ReviewResourceMethods(ConfigurableResource):
    def policy(self) -> ReviewPolicy:
        """The QA sample and agreement settings as the science's dataclass (validated there)."""
        return ReviewPolicy(**values_for(ReviewPolicy, self))


#: The Label Studio loop: its folder (``queue/<source>__<batch>/`` written, ``exports/*.json``
#: read) and every :class:`~seke.review_qa.ReviewPolicy` field (QA share and seed, VA tolerance,
#: interval level), so the UI shows what a run used.
ReviewResource = derived(
    "ReviewResource", _ReviewResourceMethods, ReviewPolicy,
    "Label Studio review folder, QA sample of accepted labels and agreement settings.",
    path=(str, Field(default_factory=lambda: os.path.abspath("review"),
                     description="review folder (env SEKE_REVIEW_DIR)")),
)


class KnowledgeTablesResource(ConfigurableResource):
    """Which bundled knowledge version the ``knowledge`` asset makes current by default."""

    version: str = Field(default="v2", description="v1 (literature) or v2 (v1 + CK+ P(AU|expression)); "
                                                   "env SEKE_KNOWLEDGE_VERSION")


class DevDataResource(ConfigurableResource):
    """Labelled dev faces in the manifest format (``<path>/<set>/manifest.csv``), used by the
    annotator-quality and training assets to score on human labels; absent sets are skipped."""

    path: str = Field(default_factory=lambda: str((Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()),
                      description="folder holding ckplus/, fer2013/, wild/ (env SEKE_SHARED_DATA)")

    def set_dir(self, name: str) -> Path:
        return Path(self.path) / name
