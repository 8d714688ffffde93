"""Tasks glue data, model and evaluation for the trainer; chosen by name."""

from jaxdistill.tasks import translation  # registers 'translation'
from jaxdistill.tasks import classification  # registers 'image_classification'
from jaxdistill.tasks import multitask  # noqa: F401  (registers 'mt2st_sst2')
