"""Evaluation: decoding (greedy, beam search) and BLEU."""

from jaxdistill.evaluation.beam_search import beam_search
from jaxdistill.evaluation.beam_search import generate
from jaxdistill.evaluation.bleu import corpus_bleu
from jaxdistill.evaluation.decode import greedy_decode
