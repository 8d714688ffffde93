"""Base config for translation runs; the variants import it and change a few fields.

Arguments (comma-separated, e.g. `configs/translate_synthetic.py:runlocal,size=small`):
  runlocal   shrink everything so a run takes seconds (tests, smoke checks).
  size=NAME  model size: tiny | small | base | big.
"""

import ml_collections
import spine

from jaxdistill import configuration
from jaxdistill.errors import ConfigError
from jaxdistill.models.transformer import SIZES


def parse_arg(arg):
    """'runlocal,size=base' -> {'runlocal': True, 'size': 'base'}."""
    return configuration.parse_config_arg(arg)


def get_config(arg=None, extra_args=()):
    """The base translation config; `extra_args` are the further arguments a
    caller accepts, as the error for an unknown one lists them ('budget',
    'composite=width|depth')."""
    args = parse_arg(arg)
    size = args.get('size', 'tiny')
    if size not in SIZES:
        raise ConfigError(f'size={size!r}; valid sizes: {" | ".join(SIZES)}.')
    config = ml_collections.ConfigDict()
    # Registered task that builds data, model and evaluation.
    config.task = 'translation'
    # Seed of parameter init, dropout and data order.
    config.seed = 0
    # Optimizer steps to train for.
    config.num_train_steps = 8000
    spine.step_controls(config)
    # Steps between progress lines / metric records (one device fetch each).
    config.log_every_steps = 100

    config.model = ml_collections.ConfigDict()
    # Registered model name.
    config.model.name = 'transformer'
    # Architecture fields (layers, widths, heads) come from the named size.
    config.model.update(SIZES[size])
    # Dropout on residual branches and embeddings.
    config.model.dropout_rate = 0.1
    # Dropout on attention probabilities.
    config.model.attention_dropout_rate = 0.0
    # Random bits per dropout mask element: 32 is flax.linen.Dropout; 8 or 16
    # use one threefry word for 4 or 2 elements (faster on CPU) and round the
    # rates to multiples of 2**-bits (jaxdistill/models/dropout.py).
    config.model.dropout_mask_bits = 32
    # Longest sequence the position encoding supports.
    config.model.max_len = 256
    # LayerNorm before each sub-layer ('pre') or after the residual sum
    # ('post': the original Transformer, fairseq's default).
    config.model.norm_position = 'pre'
    # One embedding for source, target and output projection.
    config.model.share_embeddings = True
    # Compute dtype: 'float32', or 'bfloat16' for mixed precision on a GPU/TPU
    # (parameters, optimizer state, attention softmax and logits stay float32;
    # on a CPU bfloat16 is slower).
    config.model.dtype = 'float32'
    # Several capacities in one parameter tree (method 'tsjt'; models/composite.py).
    config.model.composite = ml_collections.ConfigDict()
    # '' = a plain Transformer; 'width' = nested heads and FFN units (composite
    # A); 'depth' = bottom layers with their own output norms (composite B);
    # 'decoder' = exits inside the decoder (method 'self_distill').
    config.model.composite.kind = ''
    # Capacities as fractions of the full model's width or depth, the last 1.0.
    config.model.composite.fractions = (0.5, 1.0)

    config.method = ml_collections.ConfigDict()
    # Registered training method.
    config.method.name = 'supervised'
    # Label smoothing epsilon of the cross entropy.
    config.method.label_smoothing = 0.1
    # > 0: the output layer fused with the loss, blocks of this many rows
    # (losses.linear_cross_entropy): no [tokens, vocabulary] logits in memory.
    config.method.output_chunk_rows = 0

    config.data = ml_collections.ConfigDict()
    # 'synthetic' (built in, no download) | 'files' | 'tfds'.
    config.data.source = 'synthetic'
    # Language pairs 'src-tgt'; several target languages get '<2xx>' tags.
    config.data.pairs = ('en-xx',)
    # Folder of SPLIT.LANG[.gz] files (source 'files').
    config.data.files_dir = ''
    # TFDS dataset name and data dir (source 'tfds').
    config.data.tfds_name = ''
    config.data.tfds_data_dir = ''
    # False: a TFDS dataset not prepared in tfds_data_dir is an error at once
    # (offline, TFDS's download retries for minutes before failing).
    config.data.tfds_download = True
    # One TFDS name per pair, in the order of data.pairs (overrides tfds_name).
    config.data.tfds_names = ()
    # Split names: file prefix or TFDS split.
    config.data.train_split = 'train'
    config.data.eval_split = 'val'
    # Size and seed of the generated task (source 'synthetic').
    config.data.synthetic_train_size = 50000
    config.data.synthetic_eval_size = 500
    config.data.synthetic_seed = 0
    # Use only the first N examples of each split (0 = all).
    config.data.max_examples = 0
    # Joint SentencePiece vocabulary size (trained on the training text).
    config.data.vocab_size = 2000
    # Longest sequence in tokens, EOS included.
    config.data.max_len = 64
    # What to do with longer pairs: 'filter' or 'truncate' (counted in the log).
    config.data.too_long = 'filter'
    # Padded tokens per global batch (per side); rows = batch_tokens // length,
    # rounded down to a multiple of the devices (and replicas), at least one
    # such multiple (the run notes buckets that this raises past batch_tokens).
    config.data.batch_tokens = 4096
    # Sequence-length buckets; each compiles one step shape.
    config.data.bucket_lengths = (8, 12, 16, 24, 32, 48, 64)

    config.optimizer = ml_collections.ConfigDict()
    # 'adamw' | 'adam' | 'sgd'.
    config.optimizer.name = 'adamw'
    # Peak learning rate.
    config.optimizer.learning_rate = 2e-3
    # 'inverse_sqrt' | 'cosine' | 'linear' | 'constant'.
    config.optimizer.schedule = 'inverse_sqrt'
    # Linear warm-up steps.
    config.optimizer.warmup_steps = 1000
    # Length of cosine/linear decay (ignored by inverse_sqrt).
    # Derived (`+ 0`), not the same reference: overriding total_steps must
    # not change num_train_steps with it.
    config.optimizer.total_steps = config.get_ref('num_train_steps') + 0
    # Adam moments and epsilon.
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.98
    config.optimizer.eps = 1e-9
    # Decoupled weight decay (adamw; not on biases and norms).
    config.optimizer.weight_decay = 1e-4
    # Global-norm gradient clipping (0 = off).
    config.optimizer.grad_clip_norm = 1.0
    # Moving average of the parameters, kept beside them (0 = none; e.g.
    # 0.999): evaluation, translate, extract and teachers then use it.
    config.optimizer.ema_decay = 0.0

    # The device mesh and the checkpoints (configs/spine.py).
    config.mesh = spine.mesh()
    config.checkpoint = spine.checkpoint(every_steps=1000, keep=3)

    config.eval = ml_collections.ConfigDict()
    # Evaluate every N steps (0 = only at the end).
    config.eval.every_steps = 2000
    # With optimizer.ema_decay > 0: evaluate (and translate, extract) the
    # moving average of the parameters (True) or the parameters (False).
    config.eval.use_ema = True
    # Evaluate after the last step.
    config.eval.at_end = True
    # Evaluate on at most N examples of the eval split (0 = all), shared
    # equally among the target languages.
    config.eval.max_examples = 0
    # Sentences per eval/decoding batch.
    config.eval.batch_size = 128
    # Decode and score BLEU at each evaluation (False: loss and accuracy only,
    # much cheaper, e.g. for loss curves).
    config.eval.bleu = True
    # Longest decoded output.
    config.eval.max_decode_len = 64
    # Beam size of evaluation decoding; 0 or 1 = greedy.
    config.eval.beam_size = 0
    # Alpha of the beam score log p / length**alpha (fairseq's --lenpen).
    config.eval.length_penalty = 1.0

    config.distributed = ml_collections.ConfigDict()
    # host:port of process 0 for multi-process runs ('' = single process,
    # unless JAX_COORDINATOR_ADDRESS is set).
    config.distributed.coordinator_address = ''
    # Number of processes and this process's id (-1 = from the environment).
    config.distributed.num_processes = 0
    config.distributed.process_id = -1

    if args.get('runlocal'):
        shrink(config)
    extra_names = {e.partition('=')[0] for e in extra_args}
    unknown = set(args) - {'runlocal', 'size', *extra_names}
    if unknown:
        known = ', '.join(['runlocal', 'size=NAME', *extra_args])
        raise ConfigError(
            f'Unknown config argument(s) {sorted(unknown)}; known: {known}.'
        )
    return config


def shrink(config):
    """A run of seconds: tiny model, little data, few steps."""
    config.num_train_steps = 20
    config.log_every_steps = 5
    config.model.update(
        num_encoder_layers=1, num_decoder_layers=1, d_model=32, d_ff=64, num_heads=2
    )
    config.data.synthetic_train_size = 2000
    config.data.synthetic_eval_size = 64
    config.data.max_examples = 2000
    config.data.vocab_size = 300
    config.data.batch_tokens = 512
    config.optimizer.warmup_steps = 5
    config.checkpoint.every_steps = 10
    config.eval.every_steps = 0
    config.eval.max_examples = 64
    config.eval.batch_size = 32
    config.eval.max_decode_len = 32
    # Two buckets: few compiled shapes.
    config.data.bucket_lengths = (24, 48)
    config.data.max_len = 48
