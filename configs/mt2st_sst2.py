"""MT2ST on SST-2: sentiment classification + skip-gram on one embedding table.

  python -m jaxdistill.train --config configs/mt2st_sst2.py:arm=switch --workdir DIR
Arguments (comma-separated, e.g. `...:runlocal,arm=diminish`):
  arm=NAME   stl (sentiment only) | mtl (constant auxiliary weight) |
             diminish (MT2ST Diminish, the default) | switch (MT2ST Switch).
  runlocal   shrink everything so a run takes seconds (tests, smoke checks).
The schedules keep the paper's proportions: its 25 epochs are 25 "paper
epochs" of num_train_steps / 25 steps (rounded up) for Diminish; Switch turns
skip-gram off at 15/25 of num_train_steps (rounded down). They are linked to num_train_steps, so `--config.num_train_steps`
moves them too (a field given itself, e.g.
`--config.method.aux_weights.skipgram.step=N`, stays as given).
"""

import ml_collections
import spine

from jaxdistill import configuration
from jaxdistill.errors import ConfigError

ARMS = ('stl', 'mtl', 'diminish', 'switch')


def parse_arg(arg):
    """'runlocal,arm=mtl' -> {'runlocal': True, 'arm': 'mtl'}."""
    return configuration.parse_config_arg(arg)


def aux_weight(arm, total_steps, init=0.95):
    """The skip-gram weight schedule of one arm (a schedules.from_config spec).

    `total_steps`: a number, or the config's reference to num_train_steps
    (then the spec follows an override of it)."""
    paper_epoch = (total_steps + 24) // 25  # At least 1 step.
    if arm == 'stl':
        return 0.0
    if arm == 'mtl':
        return init
    if arm == 'diminish':
        return {'kind': 'diminish', 'init': init, 'steps_per_epoch': paper_epoch}
    if arm == 'switch':
        return {'kind': 'switch', 'value': init, 'step': total_steps * 15 // 25}
    raise ConfigError(f'arm={arm!r}; valid: {" | ".join(ARMS)}.')


def get_config(arg=None):
    args = parse_arg(arg)
    unknown = set(args) - {'runlocal', 'arm'}
    if unknown:
        raise ConfigError(
            f'Unknown config argument(s) {sorted(unknown)}; known: runlocal, arm=NAME.'
        )
    arm = args.get('arm', 'diminish')
    config = ml_collections.ConfigDict()
    # Registered task: SST-2 + skip-gram over a shared word vocabulary.
    config.task = 'mt2st_sst2'
    # Seed of parameter init, data order and skip-gram sampling.
    config.seed = 0
    # Optimizer steps to train for (about 8 epochs of SST-2 at batch 64).
    config.num_train_steps = 7500
    spine.step_controls(config)
    # Steps between progress lines / metric records (one device fetch each).
    config.log_every_steps = 250

    config.model = ml_collections.ConfigDict()
    # Width D of the shared word embeddings (and of skip-gram's output table).
    config.model.dim = 100
    # Std of the normal init of the shared embeddings.
    config.model.embed_init_scale = 0.01
    # word2vec text file (e.g. from `python -m jaxdistill.word2vec`) whose
    # vectors start the table's rows of the words it has ('' = random rows).
    config.model.init_vectors = ''
    # 'mean' (deep averaging network) | 'cnn' (Kim's CNN, max over time).
    config.model.pooling = 'mean'
    # ReLU layers after pooling.
    config.model.hidden = (128,)
    # CNN filter widths and filters per width (pooling='cnn' only).
    config.model.filter_widths = (3, 4, 5)
    config.model.num_filters = 100
    # Dropout on the embedded tokens and before the output layer.
    config.model.dropout_rate = 0.3

    config.method = ml_collections.ConfigDict()
    # Registered training method.
    config.method.name = 'multitask'
    # Weight of the sentiment loss (a number or a schedule dict).
    config.method.primary_weight = 1.0
    # Auxiliary task -> weight schedule (number or dict; see jaxdistill/schedules.py).
    config.method.aux_weights = ml_collections.ConfigDict(
        {'skipgram': aux_weight(arm, config.get_ref('num_train_steps'))}
    )
    # Weights at most this count as zero: the task leaves the compiled step
    # (and the batches) from the first step its weight stays below it.
    config.method.threshold = 0.01
    # Label smoothing of the sentiment cross entropy.
    config.method.label_smoothing = 0.0

    config.data = ml_collections.ConfigDict()
    # Folder holding SST-2's train.tsv.gz, dev.tsv and glue_dev.tsv.
    config.data.sst2_dir = '../shared/data/sst2'
    # The skip-gram corpus, one lowercased sentence a line.
    config.data.corpus = '../shared/data/words/brown.txt.gz'
    # Words seen fewer times in corpus + SST-2 training text are UNK.
    config.data.min_count = 5
    # Sentences per global batch (a multiple of the data-parallel devices).
    config.data.batch_size = 64
    # Tokens kept per sentence.
    config.data.max_len = 64
    # Use a fixed subset of N training phrases (0 = all).
    config.data.max_train_examples = 0
    # Word-similarity sets scored at evaluation (never trained on): name -> file.
    config.data.similarity = ml_collections.ConfigDict(
        {
            'ws353': '../shared/data/words/wordsim353.tsv',
            'simlex': '../shared/data/words/simlex999.txt',
        }
    )
    config.data.skipgram = ml_collections.ConfigDict()
    # Skip-gram pairs per step (a multiple of the data-parallel devices).
    config.data.skipgram.pairs = 1024
    # Negatives per pair, drawn from unigram^0.75.
    config.data.skipgram.negatives = 5
    # Largest context window (each centre draws its own in 1..window).
    config.data.skipgram.window = 5
    # word2vec's frequent-word subsampling threshold (0 = off).
    config.data.skipgram.sample = 1e-3
    # Train skip-gram on the SST-2 training text too, not only the corpus.
    config.data.skipgram.include_sst2_text = True

    config.optimizer = ml_collections.ConfigDict()
    # 'adamw' | 'adam' | 'sgd'.
    config.optimizer.name = 'adam'
    # Peak learning rate.
    config.optimizer.learning_rate = 2e-3
    # 'inverse_sqrt' | 'cosine' | 'linear' | 'constant'.
    config.optimizer.schedule = 'cosine'
    # Linear warm-up steps.
    config.optimizer.warmup_steps = 100
    # Length of the cosine decay.
    # Derived (`+ 0`), not the same reference: overriding total_steps must
    # not change num_train_steps with it.
    config.optimizer.total_steps = config.get_ref('num_train_steps') + 0
    # Adam moments and epsilon.
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.eps = 1e-8
    # Global-norm gradient clipping (0 = off).
    config.optimizer.grad_clip_norm = 0.0
    # Moving average of the parameters, kept beside them (0 = none; e.g.
    # 0.999): evaluation, translate, extract and teachers then use it.
    config.optimizer.ema_decay = 0.0

    # The device mesh and the checkpoints (configs/spine.py).
    config.mesh = spine.mesh()
    config.checkpoint = spine.checkpoint(every_steps=2500, keep=1)

    config.eval = ml_collections.ConfigDict()
    # Evaluate every N steps (0 = only at the end).
    config.eval.every_steps = 250
    # With optimizer.ema_decay > 0: evaluate (and translate, extract) the
    # moving average of the parameters (True) or the parameters (False).
    config.eval.use_ema = True
    # Evaluate after the last step.
    config.eval.at_end = True
    # SST-2 splits scored ('test' = glue_dev.tsv, 'dev' = held-out training
    # phrases); the first is also reported as eval/accuracy.
    config.eval.splits = ('test', 'dev')
    # Score at most N examples of each split (0 = all).
    config.eval.max_examples = 0
    # Sentences per eval batch.
    config.eval.batch_size = 512

    config.distributed = ml_collections.ConfigDict()
    # host:port of process 0 for multi-process runs ('' = single process).
    config.distributed.coordinator_address = ''
    # Number of processes and this process's id (-1 = from the environment).
    config.distributed.num_processes = 0
    config.distributed.process_id = -1

    if args.get('runlocal'):
        config.num_train_steps = 10
        config.log_every_steps = 5
        config.model.dim = 16
        config.model.hidden = (16,)
        config.data.min_count = 50
        config.data.batch_size = 32
        config.data.max_len = 24
        config.data.max_train_examples = 512
        config.data.skipgram.pairs = 64
        config.optimizer.warmup_steps = 2
        config.checkpoint.every_steps = 5
        config.eval.every_steps = 5
        config.eval.max_examples = 128
        config.eval.batch_size = 64
    return config
