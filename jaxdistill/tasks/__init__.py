"""Tasks glue data, model and evaluation for the trainer; chosen by name."""

from jaxdistill.tasks import translation  # registers 'translation'
