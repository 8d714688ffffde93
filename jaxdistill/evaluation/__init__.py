"""Evaluation: decoding and BLEU."""

from jaxdistill.evaluation.bleu import corpus_bleu
from jaxdistill.evaluation.decode import greedy_decode
