"""Frozen teachers' logits on a training set, computed once and cached.

A teacher is the workdir of a finished `python -m jaxdistill.train` run of a
text classifier: its config.json says how to build the model and its
vocabulary, its newest checkpoint holds the parameters (read with
`checkpoint.read_state`, so the student's run never checkpoints a teacher,
big_vision style). Logits on a list of sentences are cached as .npy under a
key made of the teacher's parameter fingerprint, the data fingerprint and a
fingerprint of the model and data code, so a retrained teacher, different data
or changed model code gives a new key (the stale file of the
same teacher is removed).

`with_teacher_logits` wraps a batcher so each batch also carries
'teacher_logits' float32 [B, K, C] and 'index' int [B] (the row in the
training set).
"""

import functools
import hashlib
import json
import os
import zipfile

from absl import logging
import jax
import numpy as np

from jaxdistill import checkpoint as checkpoint_lib
from jaxdistill import configuration
from jaxdistill import optim
from jaxdistill.data import images as images_lib
from jaxdistill.data import sst2 as sst2_lib
from jaxdistill.data import tokenizer as tokenizer_lib
from jaxdistill.errors import ConfigError


def params_fingerprint(params) -> str:
    """sha256 hex of every parameter's path, shape, dtype and bytes."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        leaf = np.asarray(leaf)
        h.update(f'{jax.tree_util.keystr(path)}{leaf.shape}{leaf.dtype}'.encode())
        h.update(np.ascontiguousarray(leaf).tobytes())
    return h.hexdigest()


def data_fingerprint(sentences) -> str:
    """sha256 hex of the sentences, in order."""
    h = hashlib.sha256()
    for s in sentences:
        h.update(s.encode('utf-8') + b'\n')
    return h.hexdigest()


def teacher_note(workdir: str, key: str) -> str:
    """The start note naming the teacher run in `workdir` (given by config
    key `key`) and the checkpoint the student reads: its latest. Says so
    when that is short of the teacher's num_train_steps (a run still
    training, stopped early or by a time limit): the student keeps the
    parameters it reads now. Reads config.json and folder names only."""
    from jaxdistill import cli  # pylint: disable=g-import-not-at-top

    steps = cli.saved_steps(os.path.join(workdir, 'checkpoints'))
    try:
        config = configuration.read_saved(os.path.join(workdir, 'config.json'))
    except ConfigError:  # Missing or damaged: its loader names the problem.
        config = {}
    if not steps:
        return ''
    total = config.get('num_train_steps')
    method = config.get('method', {}).get('name', 'supervised')
    note = f'{key}: {workdir}, a {method!r} run, at step {steps[-1]}'
    if isinstance(total, int) and steps[-1] < total:
        note += (
            f' of its num_train_steps={total}: it has not trained to its end '
            '(still training? stopped early or by a time limit?); this run '
            'freezes the teacher as it reads it now, and keeps it when resumed'
        )
    return note + '.'


def load_teacher(workdir: str):
    """(config, params, step) of the newest checkpoint of a training run."""
    from jaxdistill import cli  # pylint: disable=g-import-not-at-top

    try:  # Missing, damaged (its line named), of another task: said as such.
        config = cli.workdir_config(
            workdir, task='text_classification', needed_by='data.teachers'
        )
    except ConfigError as e:
        message = str(e)
        if not message.startswith('data.teachers: '):
            message = f'data.teachers: {message}'
        raise ConfigError(message) from None
    step, step_dir = checkpoint_lib.latest_step_dir(
        os.path.join(workdir, 'checkpoints')
    )
    state = checkpoint_lib.read_state(step_dir)
    # The teacher's own evaluation choice: its moving average, if it kept one
    # and its eval.use_ema asks for it (the default).
    return config, optim.model_params(state, config.eval.get('use_ema', True)), step


def _vocab(workdir: str, data) -> dict:
    """The vocabulary a text_classification run trained with (its config's
    `data`): its vocab.txt, read each time (a teacher trained again in the
    same folder has a new one), or (runs from before it was kept) rebuilt
    from its training split as the run built it."""
    if os.path.exists(os.path.join(workdir, sst2_lib.VOCAB_FILE)):
        return sst2_lib.word_vocab(None, data.vocab_size, workdir)
    return _rebuilt_vocab(data.data_dir, data.vocab_size, data.get('min_count', 1))


@functools.lru_cache(maxsize=4)
def _rebuilt_vocab(data_dir: str, size: int, min_count: int) -> dict:
    return sst2_lib.build_vocab(
        sst2_lib.load_split(data_dir, 'train')[0], size, min_count
    )


def _encoder(workdir: str, data):
    """(sentences -> int32 [N, max_len], vocabulary size) as the teacher run
    in `workdir` (its config's `data`) encoded its input: its word vocabulary
    or its SentencePiece model. Never writes into the teacher's workdir."""
    kind = data.get('tokenizer', 'words')
    if kind == 'sentencepiece':
        path = os.path.join(workdir, 'spm.model')
        if not os.path.exists(path):
            raise ConfigError(
                f'data.teachers: {workdir} trained with data.tokenizer='
                f"'sentencepiece' but has no spm.model: its pieces are unknown."
            )
        tok = tokenizer_lib.Tokenizer.load(path)
        return sst2_lib.piece_encoder(tok, data.max_len), tok.vocab_size
    if kind != 'words':
        raise ConfigError(
            f'data.teachers: {workdir} has data.tokenizer={kind!r}; known: '
            f'{", ".join(sst2_lib.TOKENIZERS)}.'
        )
    vocab = _vocab(workdir, data)
    return (lambda s: sst2_lib.encode(s, vocab, data.max_len)), len(vocab) + 2


@functools.lru_cache(maxsize=8)
def _jitted_logits(model):
    return jax.jit(
        lambda p, x: model.apply({'params': p}, x, train=False)['logits'][-1]
    )


def _teacher_forward(workdir, config, params, sentences, batch_size: int) -> np.ndarray:
    """Logits float32 [N, C] of the teacher run in `workdir` (`config`)."""
    from jaxdistill.methods import make_method  # pylint: disable=g-import-not-at-top
    from jaxdistill.models import multi_exit  # pylint: disable=g-import-not-at-top
    from jaxdistill.tasks import classification  # pylint: disable=g-import-not-at-top

    d = config.data
    encode, vocab_size = _encoder(workdir, d)
    tokens = encode(list(sentences))
    model = classification.build_model(
        config.model, num_classes=2, vocab_size=vocab_size, max_len=d.max_len
    )
    # The model the teacher run evaluates (its method's eval_params):
    # replica 0 of a codistillation run, whose parameters are stacked.
    method = make_method(config.method, multi_exit.make_fns(model, 'tokens'))
    params = method.eval_params(params, {})
    apply = _jitted_logits(model)
    n = len(tokens)
    pad = (-n) % batch_size
    tokens = np.concatenate([tokens, np.zeros((pad, tokens.shape[1]), np.int32)])
    out = [
        np.asarray(apply(params, tokens[i : i + batch_size]), np.float32)
        for i in range(0, len(tokens), batch_size)
    ]
    return np.concatenate(out)[:n]


@functools.cache
def code_fingerprint() -> str:
    """sha256 hex of the code that turns a teacher into logits.

    Every module under jaxdistill/models and jaxdistill/data, and this file:
    the same parameters give other logits once a model's forward pass or the
    sentence encoding changes (as CNNText's did when PAD positions started to
    read as zeros), so a cache from older code must not be read.
    """
    root = os.path.dirname(os.path.abspath(__file__))
    files = [os.path.abspath(__file__)]
    for sub in ('models', 'data'):
        folder = os.path.join(root, sub)
        files += sorted(
            os.path.join(folder, f) for f in os.listdir(folder) if f.endswith('.py')
        )
    h = hashlib.sha256()
    for path in files:
        with open(path, 'rb') as f:
            h.update(os.path.basename(path).encode() + f.read())
    return h.hexdigest()


def cache_key(params, sentences, config) -> str:
    """Hex key of (teacher parameters, data, teacher model and data config, code)."""
    return hashlib.sha256(
        (
            code_fingerprint()
            + params_fingerprint(params)
            + data_fingerprint(sentences)
            + json.dumps(config.model.to_dict(), sort_keys=True, default=str)
            + json.dumps(config.data.to_dict(), sort_keys=True, default=str)
        ).encode()
    ).hexdigest()[:24]


def teacher_logits(
    workdir: str, sentences, *, cache_dir: str = '', batch_size: int = 512
) -> np.ndarray:
    """float32 [N, C] logits of the teacher run in `workdir` on `sentences`.

    Cached in `cache_dir` ('' = WORKDIR/logit_cache) as
    `<teacher>-<key>.npy`, key = sha256(parameter fingerprint, data
    fingerprint, teacher config, code fingerprint).
    """
    config, params, step = load_teacher(workdir)
    cache_dir = cache_dir or os.path.join(workdir, 'logit_cache')
    teacher_id = hashlib.sha256(os.path.abspath(workdir).encode()).hexdigest()[:12]
    key = cache_key(params, sentences, config)
    path = os.path.join(cache_dir, f'{teacher_id}-{key}.npy')
    if os.path.exists(path):
        try:
            logits = np.load(path)
        except (OSError, ValueError, EOFError) as e:  # Only a cache: rebuilt.
            logging.warning(
                'Teacher %s: cached logits %s unreadable (%s).', workdir, path, e
            )
            logits = None
        if (
            logits is not None
            and logits.dtype == np.float32
            and logits.ndim == 2
            and logits.shape[0] == len(sentences)
            and np.isfinite(logits).all()
        ):
            return logits
    logging.info('Teacher %s (step %d): computing logits.', workdir, step)
    logits = _teacher_forward(workdir, config, params, sentences, batch_size)
    try:
        os.makedirs(cache_dir, exist_ok=True)
        for name in os.listdir(cache_dir):  # Stale entries of this teacher.
            if name.startswith(teacher_id + '-') and name != os.path.basename(path):
                os.remove(os.path.join(cache_dir, name))
        tmp = f'{path}.{os.getpid()}.tmp.npy'
        np.save(tmp, logits)
        os.replace(tmp, path)
    except OSError as e:  # A teacher folder the student may not write to.
        logging.warning(
            'Teacher %s: logits not cached in %s (%s); they are computed '
            'again next time (data.teacher_cache_dir sets another folder).',
            workdir,
            cache_dir,
            e,
        )
    return logits


class GatherBatcher:
    """Batches of an id batcher, with rows of `arrays` gathered by 'index'.

    Position, resumption and order are the inner batcher's, so a run with
    teachers sees exactly the batches of the same run without them.
    """

    def __init__(self, inner, arrays: dict):
        self._inner, self._arrays = inner, arrays

    def batches_per_epoch(self) -> int:
        return self._inner.batches_per_epoch()

    def padding_fraction(self) -> float:
        return self._inner.padding_fraction()

    def _add(self, batch: dict) -> dict:
        rows = batch['index']
        return {**batch, **{k: v[rows] for k, v in self._arrays.items()}}

    def batch_at(self, epoch: int, index: int, part=None) -> dict:
        return self._add(self._inner.batch_at(epoch, index, part=part))

    def set_part(self, index: int, count: int) -> None:
        self._inner.set_part(index, count)

    @property
    def position(self) -> dict:
        return self._inner.position

    def set_position(self, pos: dict) -> None:
        self._inner.set_position(pos)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        return self._add(next(self._inner))


FROZEN = 'teacher_logits.npz'  # In the student's workdir.


def _frozen_key(teachers, sentences) -> str:
    digest = hashlib.sha256()
    for t in teachers:
        digest.update(os.path.abspath(t).encode() + b'\0')
    for sentence in sentences:
        digest.update(sentence.encode() + b'\0')
    return digest.hexdigest()


def frozen_logits(student_workdir: str, teachers, sentences) -> np.ndarray | None:
    """The teachers' logits [N, K, C] this student froze at its start, if it
    did so for these teachers and sentences and has saved a checkpoint since
    (a run started afresh in the folder reads the teachers again); else None."""
    from jaxdistill import cli  # pylint: disable=g-import-not-at-top

    path = os.path.join(student_workdir, FROZEN) if student_workdir else ''
    if not path or not os.path.exists(path):
        return None
    if not cli.has_checkpoint(student_workdir):
        return None
    try:
        with np.load(path) as f:
            if str(f['key']) != _frozen_key(teachers, sentences):
                return None
            return f['logits']
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        # Damaged: the teachers are read again, as they are now; said, since
        # the resumed run may then learn from other logits than before.
        logging.warning(
            '%s is unreadable (%s: %s): the teachers are read again, as they are '
            'now; if they trained on since this run started, it resumes with '
            'other teacher logits than it had.',
            path,
            type(e).__name__,
            e,
        )
        return None


def with_teacher_logits(
    tokens,
    labels,
    sentences,
    teachers,
    *,
    batch_size,
    seed,
    cache_dir='',
    student_workdir='',
    frozen=None,
):
    """A batcher of {'tokens', 'label', 'index', 'teacher_logits' [B, K, C]}.

    Args:
      tokens: int32 [N, L] the student's encoding of `sentences`.
      labels: int32 [N].
      sentences: the N training sentences (what the teachers read).
      teachers: K teacher workdirs.
      student_workdir: where the logits read from the teachers are frozen
        (`FROZEN`), so that a resumed run trains on the same teachers even
        if a teacher has trained on since, or moved; '' freezes nothing.
      frozen: the logits a resumed run froze before (`frozen_logits`), used
        instead of reading the teachers; None reads them.
    """
    logits = frozen
    if logits is None:
        logits = np.stack(
            [teacher_logits(t, sentences, cache_dir=cache_dir) for t in teachers],
            axis=1,
        )
        # Not by a tool that only reads the run (evaluate: existing_only).
        writes = not tokenizer_lib.reading_only()
        if student_workdir and writes and jax.process_index() == 0:
            path = os.path.join(student_workdir, FROZEN)
            tmp = f'{path}.{os.getpid()}.tmp.npz'
            np.savez(tmp, logits=logits, key=_frozen_key(teachers, sentences))
            os.replace(tmp, path)
    ids = images_lib.ImageBatcher(
        np.arange(len(labels)), labels, batch_size=batch_size, seed=seed, key='index'
    )
    return GatherBatcher(ids, {'tokens': tokens, 'teacher_logits': logits})
