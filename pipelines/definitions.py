"""The code location: every asset, resource, job, sensor and schedule of the platform."""


from dagster import Definitions

from assets.knowledge import knowledge
from assets.knowledge_prompts import knowledge_prompts
from assets.raw_faces import raw_faces
from pipelines.jobs import annotate_batch, refresh_knowledge
from pipelines.sensors import new_batches_sensor
from resources.landing import LandingZoneResource
from resources.lake import LakeResource

defs = Definitions(
    assets=[raw_faces, knowledge, knowledge_prompts],
    jobs=[annotate_batch, refresh_knowledge],
    sensors=[new_batches_sensor],
    resources={
        "lake": LakeResource(),
        "landing": LandingZoneResource(),
    },
)
