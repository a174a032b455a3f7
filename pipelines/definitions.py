"""The code location: every asset, resource, job, sensor and schedule of the platform."""


from dagster import Definitions

from assets.annotation import annotate_faces
from assets.evaluation import evaluation
from assets.knowledge import knowledge
from assets.knowledge_prompts import knowledge_prompts
from assets.products import feab, feid
from assets.raw_faces import raw_faces
from assets.review import review_labels, review_queue
from assets.warehouse import warehouse
from pipelines.jobs import annotate_batch, refresh_knowledge
from pipelines.sensors import new_batches_sensor
from resources.annotator import AnnotatorResource
from resources.landing import LandingZoneResource
from resources.lake import LakeResource
from resources.warehouse import WarehouseResource

defs = Definitions(
    assets=[raw_faces, knowledge, knowledge_prompts, annotate_faces, feid, feab, warehouse,
            evaluation, review_queue, review_labels],
    jobs=[annotate_batch, refresh_knowledge],
    sensors=[new_batches_sensor],
    resources={
        "lake": LakeResource(),
        "landing": LandingZoneResource(),
        "annotator": AnnotatorResource(),
        "duckdb": WarehouseResource(),
    },
)
