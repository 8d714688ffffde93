"""Multi30k en->de (or several pairs) from local files.

  python -m jaxdistill.train --config configs/translate_multi30k.py \
      --workdir /tmp/m30k --config.data.files_dir=../shared/data/multi30k
"""

import translation_base


def get_config(arg=None):
    config = translation_base.get_config(arg)
    config.data.source = 'files'
    # SPLIT.LANG.gz files; the README of ../shared/data describes them.
    config.data.files_dir = '../shared/data/multi30k'
    config.data.pairs = ('en-de',)
    config.data.train_split = 'train'
    config.data.eval_split = 'val'
    if 'runlocal' in translation_base.parse_arg(arg):
        return config
    # The published tiny reference: 10k joint BPE, dropout 0.3, 8k updates.
    config.data.vocab_size = 10000
    config.model.dropout_rate = 0.3
    config.num_train_steps = 8000
    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_steps = 1000
    return config
