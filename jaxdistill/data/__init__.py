"""Translation data: text files, TFDS or a generator -> token ids -> numpy batches."""

from jaxdistill.data.batching import BucketedBatcher
from jaxdistill.data.batching import eval_batches
from jaxdistill.data.synthetic import generate_pairs
from jaxdistill.data.tfds_translation import load_tfds_translation
from jaxdistill.data.text import read_lines
from jaxdistill.data.text import read_parallel
from jaxdistill.data.tokenizer import BOS_ID
from jaxdistill.data.tokenizer import EOS_ID
from jaxdistill.data.tokenizer import load_or_train_tokenizer
from jaxdistill.data.tokenizer import shared_tokenizer
from jaxdistill.data.tokenizer import PAD_ID
from jaxdistill.data.tokenizer import Tokenizer
from jaxdistill.data.tokenizer import UNK_ID
from jaxdistill.data.translation import encode
from jaxdistill.data.translation import language_pairs
from jaxdistill.data.translation import load_translation
from jaxdistill.data.translation import SOURCES
from jaxdistill.data.translation import tag_symbols
from jaxdistill.data.translation import target_languages
from jaxdistill.data.translation import target_tag
from jaxdistill.data.translation import TOO_LONG
from jaxdistill.data.translation import TranslationData
