"""Translation: data, tokenizer, model and evaluation glued for the trainer."""

import dataclasses
import functools
import os
import time
from collections.abc import Callable

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from jaxdistill import cli
from jaxdistill import data as data_lib
from jaxdistill import configuration
from jaxdistill import losses
from jaxdistill import optim
from jaxdistill import registry
from jaxdistill import sharding as sharding_lib
from jaxdistill.errors import ConfigError, DataError
from jaxdistill.evaluation import bleu as bleu_lib
from jaxdistill.evaluation.beam_search import generate
from jaxdistill.methods.base import ModelFns
from jaxdistill.models import composite as composite_lib
from jaxdistill.models import transformer as transformer_lib


# A distilled student's copy of its teacher's config (translation load_teacher).
TEACHER_CONFIG = 'teacher_config.json'


def build_model(model_cfg, vocab_size: int) -> transformer_lib.Transformer:
    """A Transformer from `config.model` (name + TransformerConfig fields).

    With a `model.composite` block, this is the composite's largest capacity.
    """
    fields = {k: v for k, v in model_cfg.items() if k not in ('name', 'composite')}
    if model_cfg.get('name', 'transformer') != 'transformer':
        registry.get('model', model_cfg.name)  # Raises with suggestions.
    valid = {f.name for f in dataclasses.fields(transformer_lib.TransformerConfig)}
    configuration.check_known_keys('model', fields, valid - {'vocab_size'})
    return transformer_lib.Transformer(
        transformer_lib.TransformerConfig(vocab_size=vocab_size, **fields)
    )


def build_composite(model_cfg, full: transformer_lib.TransformerConfig):
    """The `Composite` that `model.composite` asks for, or None.

    `model.composite.kind`: '' (a plain Transformer), 'width' or 'depth';
    `model.composite.fractions`: capacities, e.g. (0.25, 0.5, 1.0).
    """
    cfg = model_cfg.get('composite', None)
    if not cfg or not cfg.get('kind', ''):
        return None
    unknown = sorted(set(cfg.keys()) - {'kind', 'fractions'})
    if unknown:
        raise ConfigError(
            f'Unknown key(s) model.composite.{", model.composite.".join(unknown)}; '
            'valid keys: kind, fractions.'
        )
    return composite_lib.Composite(
        full, cfg.kind, tuple(float(f) for f in cfg.get('fractions', ()))
    )


def model_fns_for(model_cfg, vocab_size: int):
    """(largest Transformer, ModelFns, Composite or None) of `config.model`."""
    model = build_model(model_cfg, vocab_size)
    composite = build_composite(model_cfg, model.config)
    if composite is None:
        return model, transformer_fns(model), None
    return model, composite_lib.make_fns(composite, translation_labels), composite


def translation_labels(batch):
    """Targets and where they are real tokens."""
    return batch['targets'], batch['targets'] != data_lib.PAD_ID


def transformer_fns(model) -> ModelFns:
    """How methods run an encoder-decoder on `{'inputs', 'targets'}` batches."""

    def init(rng, batch):
        return model.init(
            {'params': rng}, batch['inputs'], batch['targets'], train=False
        )['params']

    def run(params, batch, train, rng, method=None):
        rngs = {'dropout': rng} if train and rng is not None else None
        return model.apply(
            {'params': params},
            batch['inputs'],
            batch['targets'],
            train=train,
            rngs=rngs,
            method=method,
        )

    def apply(params, batch, *, train, rng=None):
        return run(params, batch, train, rng)

    def features(params, batch, *, train, rng=None):
        h = run(params, batch, train, rng, method=type(model).features)
        return h, transformer_lib.output_table(model.config, params)

    return ModelFns(
        init=init, apply=apply, labels=translation_labels, features=features
    )


def eval_lengths(max_len: int) -> tuple[int, ...]:
    """Padded lengths of evaluation batches: 16, 32, ... below max_len, then it.

    Coarser than training buckets, so that the (length-sorted) batches are
    full and decoding compiles few shapes; fine enough that cross-attention,
    read at every decoding step, does not scan much padding.
    """
    lengths, n = [], 16
    while n < max_len:
        lengths.append(n)
        n *= 2
    return tuple(lengths) + (max_len,)


def _tokenizer(config, workdir, train_data, tags):
    """Trains the joint SentencePiece model once (process 0), then loads it;
    one a start without a checkpoint made from other data is made again."""
    path = os.path.join(workdir, 'spm.model')
    texts = lambda: list(train_data.source) + list(train_data.target)
    return data_lib.shared_tokenizer(
        path,
        texts,
        config.data.vocab_size,
        user_defined_symbols=tags,
        remake_stale=not cli.has_checkpoint(workdir),
    )


def check_decode_len(max_decode_len, model_max_len: int):
    """ConfigError unless `eval.max_decode_len` fits the model's positions."""
    if not isinstance(max_decode_len, int) or not 1 <= max_decode_len <= model_max_len:
        raise ConfigError(
            f'eval.max_decode_len={max_decode_len!r} must be in 1..model.max_len '
            f'({model_max_len}), the longest sequence the model can hold.'
        )


def check_config(config):
    """ConfigError naming the first data/eval/model length or size this run
    cannot use. Reads no data: a mistake stops the run before any work."""
    d, e = config.data, config.eval
    if d.get('source', None) not in data_lib.SOURCES:
        raise ConfigError(
            f'data.source is {d.get("source", None)!r}; valid values: '
            f'{", ".join(data_lib.SOURCES)}'
        )
    too_long = d.get('too_long', 'filter')
    if too_long not in data_lib.TOO_LONG:
        raise ConfigError(
            f'data.too_long is {too_long!r}; valid values: '
            f'{", ".join(data_lib.TOO_LONG)}'
        )
    data_lib.language_pairs(d)  # Malformed pairs are named.
    beam = e.get('beam_size', 0)
    if beam < 0:
        raise ConfigError(f'eval.beam_size={beam} must be >= 0 (0 or 1: greedy).')
    if e.get('length_penalty', 1.0) < 0:
        raise ConfigError(f'eval.length_penalty={e.length_penalty} must be >= 0.')
    configuration.check_counts(
        ('data.max_len', d.max_len, 1),
        ('data.batch_tokens', d.batch_tokens, 1),
        ('eval.batch_size', e.batch_size, 1),
        ('data.max_examples', d.get('max_examples', 0), 0),  # 0: all.
        ('eval.max_examples', e.get('max_examples', 0), 0),
    )
    buckets = tuple(d.bucket_lengths)
    if not buckets or any(not isinstance(b, int) or b < 1 for b in buckets):
        raise ConfigError(
            f'data.bucket_lengths={buckets} must be one or more positive '
            f'lengths in tokens, e.g. ({d.max_len},).'
        )
    if max(buckets) < d.max_len:
        raise ConfigError(
            f'data.bucket_lengths (largest {max(buckets)}) must '
            f'reach data.max_len ({d.max_len}).'
        )
    model_max = config.model.get('max_len', transformer_lib.TransformerConfig.max_len)
    padded = min(b for b in buckets if b >= d.max_len)  # Longest batch length.
    if d.max_len > model_max:
        raise ConfigError(
            f'data.max_len={d.max_len} exceeds model.max_len={model_max}, the '
            'longest sequence the model can hold; lower data.max_len or raise '
            'model.max_len.'
        )
    if padded > model_max:
        raise ConfigError(
            f'data.bucket_lengths pads sequences of data.max_len={d.max_len} '
            f'tokens to {padded}, more than model.max_len={model_max}; add a '
            f'bucket of {d.max_len} or raise model.max_len.'
        )
    check_decode_len(e.max_decode_len, model_max)


@registry.register('task', 'translation')
class TranslationTask:
    """Everything model- and data-specific the generic trainer needs."""

    # The data and eval keys this task reads, besides the spine's
    # (trainer.check_keys).
    config_keys = {
        'data': frozenset(
            {
                'source',
                'pairs',
                'files_dir',
                'tfds_name',
                'tfds_names',
                'tfds_data_dir',
                'tfds_download',
                'train_split',
                'eval_split',
                'synthetic_train_size',
                'synthetic_eval_size',
                'synthetic_seed',
                'vocab_size',
                'max_len',
                'max_examples',
                'batch_tokens',
                'bucket_lengths',
                'too_long',
            }
        ),
        'eval': frozenset({'beam_size', 'length_penalty', 'max_decode_len', 'bleu'}),
    }

    @staticmethod
    def check_config(config):
        """ConfigError for settings this task refuses, without reading data:
        the lengths and sizes (`check_config`), and the model's fields (built
        with the configured vocabulary size)."""
        check_config(config)
        model = build_model(config.model, config.data.vocab_size)
        if config.model.get('composite', {}).get('kind', '') in ('width', 'depth'):
            build_composite(config.model, model.config)

    def __init__(self, config, workdir: str, mesh):
        self.config, self.mesh = config, mesh
        d = config.data
        check_config(config)
        started = time.time()
        train = data_lib.load_translation(d, d.train_split)
        e = config.eval
        if e.get('every_steps', 0) or e.get('at_end', True):
            # Read now, so a missing split is named before any training; a
            # run that never evaluates needs no evaluation files.
            _ = self.eval_data
        tags = data_lib.tag_symbols(d)
        self.tagged = bool(tags)
        self.tokenizer = _tokenizer(config, workdir, train, tags)
        src, tgt, self.encode_stats = data_lib.encode(
            train,
            self.tokenizer,
            max_len=d.max_len,
            too_long=d.too_long,
            tagged=self.tagged,
        )
        if not len(src):
            stats = ', '.join(f'{k} {v}' for k, v in self.encode_stats.items())
            raise DataError(
                f'data.train_split {d.train_split!r}: no pair is left to train on '
                f'({stats}) with data.max_len={d.max_len} tokens and '
                f"data.too_long={d.too_long!r}; raise max_len or use 'truncate'."
            )
        self.batch_multiple = sharding_lib.batch_multiple(
            mesh, config.method.get('num_replicas', 1)
        )
        # Training rows also split evenly into the step's micro-batches.
        self.train_multiple = self.batch_multiple * config.get('microbatches', 1)
        self.train_batches = data_lib.BucketedBatcher(
            src,
            tgt,
            batch_tokens=d.batch_tokens,
            bucket_lengths=d.bucket_lengths,
            seed=config.seed,
            batch_multiple=self.train_multiple,
        )
        self.model, fns, self.composite = model_fns_for(
            config.model, self.tokenizer.vocab_size
        )
        self.workdir = workdir
        self.model_fns = dataclasses.replace(fns, load_teacher=self.load_teacher)
        self.teacher_notes = []  # What load_teacher read, for start_notes.
        self._eval_sets = {}
        self._models, self._steps = {}, {}
        logging.info(
            'Data ready in %.1fs: %s; %s',
            time.time() - started,
            self.encode_stats,
            self.train_batches.stats(),
        )

    @functools.cached_property
    def eval_data(self):
        """The `data.eval_split` pairs (read on first use)."""
        return data_lib.load_translation(self.config.data, self.config.data.eval_split)

    def load_teacher(self, workdir: str):
        """(ModelFns, params) of the model trained in `workdir`, for 'distill'.

        The teacher must use this run's vocabulary: its spm.model must be
        byte-identical to ours (copy it into the student's workdir before
        the student's first start). Its config is kept beside ours
        (teacher_config.json), so once this run has a checkpoint (which
        holds the frozen teacher) it resumes and is evaluated without the
        teacher's folder.
        """
        from jaxdistill import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
        from jaxdistill.methods import make_method  # pylint: disable=g-import-not-at-top

        kept = os.path.join(self.workdir, TEACHER_CONFIG) if self.workdir else ''
        own = os.path.join(self.workdir, 'checkpoints') if self.workdir else ''
        gone = not os.path.exists(os.path.join(workdir, 'config.json'))
        if gone and kept and os.path.exists(kept) and cli.saved_steps(own):
            return self._teacher_from_own_checkpoint(workdir, kept, own)
        config = cli.workdir_config(
            workdir, task='translation', needed_by='method.teacher_workdir'
        )
        paths = [os.path.join(d, 'spm.model') for d in (workdir, self.workdir)]
        blobs = []
        for path in paths:
            if not os.path.exists(path):
                raise ConfigError(f'method.teacher_workdir: {path} does not exist.')
            with open(path, 'rb') as f:
                blobs.append(f.read())
        if blobs[0] != blobs[1]:
            raise ConfigError(
                f'method.teacher_workdir: the teacher in {workdir} uses another '
                f'vocabulary ({paths[0]} differs from {paths[1]}); copy the '
                "teacher's spm.model into a new student workdir before training."
            )
        from jaxdistill import teacher_cache  # pylint: disable=g-import-not-at-top

        note = teacher_cache.teacher_note(workdir, 'method.teacher_workdir')
        if note and kept and os.path.exists(kept) and cli.saved_steps(own):
            note = (
                f'{note[:-1]}; this resumed run goes on with the teacher frozen '
                'in its checkpoint, as it was at its first start.'
            )
        if note and note not in self.teacher_notes:
            self.teacher_notes.append(note)
        model, fns, _ = model_fns_for(config.model, self.tokenizer.vocab_size)
        method = make_method(config.method, fns)
        _, step_dir = checkpoint_lib.latest_step_dir(
            os.path.join(workdir, 'checkpoints')
        )
        state = checkpoint_lib.read_state(step_dir)
        # What the teacher's own evaluation used (its eval.use_ema).
        use_ema = config.eval.get('use_ema', True)
        params = jax.device_get(
            method.eval_params(
                optim.model_params(state, use_ema), state.get('extra', {})
            )
        )
        if kept and not os.path.exists(kept) and jax.process_index() == 0:
            # At the first start: the config of the teacher this run freezes.
            with open(kept + '.tmp', 'w', encoding='utf-8') as f:
                f.write(configuration.to_json(config))
            os.replace(kept + '.tmp', kept)
        teacher = transformer_lib.Transformer(
            transformer_lib.infer_config(params, model.config)
        )
        return transformer_fns(teacher), params

    def _teacher_from_own_checkpoint(self, workdir: str, kept: str, own: str):
        """The frozen teacher as this run's latest checkpoint holds it, built
        with the teacher's config kept at the first start."""
        from jaxdistill import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top

        config = ml_collections.ConfigDict(configuration.read_saved(kept))
        step, step_dir = checkpoint_lib.latest_step_dir(own)
        params = jax.device_get(checkpoint_lib.read_state(step_dir)['extra']['teacher'])
        model = build_model(config.model, self.tokenizer.vocab_size)
        teacher = transformer_lib.Transformer(
            transformer_lib.infer_config(params, model.config)
        )
        self.teacher_notes.append(
            f'method.teacher_workdir: {workdir} is gone; the teacher is the '
            f'one this run froze in its checkpoint (step {step}), built with '
            f'the config kept in {kept}.'
        )
        return transformer_fns(teacher), params

    def data_summary(self) -> dict:
        stats = dict(self.encode_stats)
        stats['padding_fraction'] = self.train_batches.padding_fraction()
        stats['batches_per_epoch'] = self.train_batches.batches_per_epoch()
        stats['vocab_size'] = self.tokenizer.vocab_size
        return stats

    def start_notes(self) -> list[str]:
        """What a user would not expect from the config alone."""
        raised = self.train_batches.raised_buckets()
        if not raised:
            return list(self.teacher_notes)
        shapes = ', '.join(f'{l} ({r * l} tokens)' for l, r in raised.items())
        return list(self.teacher_notes) + [
            f'data.batch_tokens={self.config.data.batch_tokens} gives fewer '
            f'rows than the {self.train_multiple} that every batch needs (a '
            'multiple of the devices it is split over, of the replicas and of '
            'the micro-batches), so the batches of bucket length '
            f'{shapes} hold {self.train_multiple} rows: more tokens than '
            'batch_tokens. Raise data.batch_tokens, or use fewer devices (or '
            'micro-batches), to set the batch yourself.'
        ]

    def init_batch(self) -> dict:
        return self.train_batches.batch_at(0, 0)

    def _eval_set(self, split: str):
        """Encoded batches of `split` (cached), the raw sentences, their count."""
        if split not in self._eval_sets:
            d, e = self.config.data, self.config.eval
            data = (
                self.eval_data
                if split == d.eval_split
                else data_lib.load_translation(d, split)
            )
            # Pairs with a blank side cannot be scored; leaving them out here
            # keeps hypotheses aligned with references (encode skips them too).
            usable = [
                i
                for i in range(len(data.source))
                if data.source[i].strip() and data.target[i].strip()
            ]
            if len(usable) < len(data.source):
                logging.warning(
                    'Evaluation split %r: %d of its %d pairs have an empty side '
                    'and are left out.',
                    split,
                    len(data.source) - len(usable),
                    len(data.source),
                )
            langs = [data.target_lang[i] for i in usable]
            # eval.max_examples trims the eval split only; other splits
            # (e.g. a test set scored by a benchmark) are always whole.
            limit = e.max_examples if split == d.eval_split else 0
            keep = [usable[j] for j in _first_per_language(langs, limit)]
            subset = data_lib.TranslationData(
                source=[data.source[i] for i in keep],
                target=[data.target[i] for i in keep],
                target_lang=[data.target_lang[i] for i in keep],
            )
            src, tgt, stats = data_lib.encode(
                subset,
                self.tokenizer,
                max_len=d.max_len,
                too_long='truncate',
                tagged=self.tagged,
            )
            if stats['truncated']:
                # Scored against the whole reference all the same.
                logging.warning(
                    'Evaluation split %r: %d of its %d pairs are longer than '
                    'data.max_len=%d tokens on a side and are cut to it (the '
                    'model reads the cut source; BLEU compares with the whole '
                    'reference).',
                    split,
                    stats['truncated'],
                    len(keep),
                    d.max_len,
                )
            batches = data_lib.eval_batches(
                src,
                tgt,
                batch_size=e.batch_size,
                bucket_lengths=eval_lengths(d.max_len),
                batch_multiple=self.batch_multiple,
            )
            assert len(src) == len(subset.source), 'eval pairs must not be dropped'
            self._eval_sets[split] = (batches, subset, len(src))
        return self._eval_sets[split]

    def model_for(self, params) -> transformer_lib.Transformer:
        """The plain Transformer that `params` (any capacity) belong to."""
        config = transformer_lib.infer_config(params, self.model.config)
        if config not in self._models:
            self._models[config] = transformer_lib.Transformer(config)
        return self._models[config]

    def _eval_step(self, model):
        key = ('eval', model.config)
        if key not in self._steps:
            self._steps[key] = self._make_eval_step(model)
        return self._steps[key]

    @staticmethod
    def _make_eval_step(model):
        fns = transformer_fns(model)

        def step(params, batch):
            logits = fns.apply(params, batch, train=False)
            labels, where = fns.labels(batch)
            nll = losses.cross_entropy(logits, labels, where=where)
            acc = losses.accuracy(logits, labels, where=where)
            return (jnp.sum(nll), jnp.sum(acc), jnp.sum(where))

        return jax.jit(step)

    def evaluate(
        self,
        params,
        *,
        bleu: bool | None = None,
        split: str | None = None,
        beam_size: int | None = None,
        length_penalty: float | None = None,
    ) -> dict:
        """Loss, token accuracy and BLEU (sacreBLEU and tokenised lowercased).

        Args:
          params: the raw parameter tree.
          bleu: decode and score BLEU (else loss and accuracy only); default
            `eval.bleu` (True).
          split: default `data.eval_split`; e.g. 'test_2016_flickr'.
          beam_size, length_penalty: default `eval.beam_size` (0 or 1 =
            greedy) and `eval.length_penalty` (see `evaluation.beam_search`).
        `params` are plain Transformer parameters of any shape (e.g. one
        capacity of a composite); the architecture is read off their shapes.
        The hypotheses stay in `self.last_hypotheses`.
        """
        model = self.model_for(params)
        e = self.config.eval
        if bleu is None:
            bleu = e.get('bleu', True)
        beam = e.get('beam_size', 0) if beam_size is None else beam_size
        alpha = (
            e.get('length_penalty', 1.0) if length_penalty is None else length_penalty
        )
        batches, subset, n = self._eval_set(split or self.config.data.eval_split)
        sharding = sharding_lib.batch_sharding(self.mesh)
        parts = []  # Each batch's (loss, correct, tokens) sums, on device.
        hyps = [''] * n
        unfinished = 0  # Hypotheses cut at eval.max_decode_len, without EOS.
        decoded = None  # The previous batch's decoding, read after the next's starts.

        def read(out, index):
            nonlocal unfinished
            out = multihost_utils.process_allgather(out, tiled=True)
            for row, i in zip(np.asarray(out), index):
                if i >= 0:
                    hyps[i] = self.tokenizer.decode(row.tolist())
                    unfinished += not np.any(row == data_lib.EOS_ID)

        # Nothing waits on the device inside the loop but the previous
        # batch's hypotheses, detokenised while this batch decodes.
        for batch, index in batches:
            arrays = sharding_lib.global_batch(batch, sharding)
            parts.append(self._eval_step(model)(params, arrays))
            if bleu:
                out = generate(
                    model,
                    {'params': params},
                    arrays['inputs'],
                    beam_size=beam,
                    max_len=e.max_decode_len,
                    length_penalty=alpha,
                )
                if decoded is not None:
                    read(*decoded)
                decoded = out, index
        if decoded is not None:
            read(*decoded)
        sums = np.zeros(3)
        for part in jax.device_get(parts):
            sums += np.array(part)
        metrics = {
            'eval/loss': sums[0] / max(sums[2], 1),
            'eval/accuracy': sums[1] / max(sums[2], 1),
        }
        if bleu:
            metrics.update(self._bleu(hyps, subset))
            # Near 1: the model has not learnt to stop yet (early in
            # training), or eval.max_decode_len is too short for the data.
            metrics['eval/unfinished'] = unfinished / max(n, 1)
            self.last_hypotheses = hyps
        return metrics

    def _predict_step(self, model):
        key = ('predict', model.config)
        if key not in self._steps:
            fns = transformer_fns(model)
            self._steps[key] = jax.jit(
                lambda params, batch: losses.argmax(
                    fns.apply(params, batch, train=False)
                )
            )
        return self._steps[key]

    def predict(self, params, split: str | None = None):
        """Teacher-forced argmax token at every target position of `split`.

        Returns (predictions int32 [N], valid bool [N]) over all positions of
        the eval batches in a fixed order, for agreement and churn between
        models (`trainer.agreement_metrics`).
        """
        batches, _, _ = self._eval_set(split or self.config.data.eval_split)
        sharding = sharding_lib.batch_sharding(self.mesh)
        preds, valid = [], []
        for batch, index in batches:
            out = self._predict_step(self.model_for(params))(
                params, sharding_lib.global_batch(batch, sharding)
            )
            out = np.asarray(multihost_utils.process_allgather(out, tiled=True))
            preds.append(out.reshape(-1))
            real = (batch['targets'] != data_lib.PAD_ID) & (index >= 0)[:, None]
            valid.append(real.reshape(-1))
        return np.concatenate(preds), np.concatenate(valid)

    def _bleu(self, hyps, subset) -> dict:
        refs, langs = list(subset.target), list(subset.target_lang)
        out = {}
        # Every line tokenised by its own language's rules for bleu_tok_lc.
        result = bleu_lib.corpus_bleu(hyps, refs, target_lang=langs)
        out['eval/bleu'] = result['sacrebleu']
        out['eval/bleu_tok_lc'] = result['bleu_tok_lc']
        for lang in sorted(set(langs)) if len(set(langs)) > 1 else []:
            idx = [i for i, l in enumerate(langs) if l == lang]
            r = bleu_lib.corpus_bleu(
                [hyps[i] for i in idx], [refs[i] for i in idx], target_lang=lang
            )
            out[f'eval/bleu_{lang}'] = r['sacrebleu']
            out[f'eval/bleu_tok_lc_{lang}'] = r['bleu_tok_lc']
        self.last_examples = list(zip(subset.source[:3], hyps[:3], refs[:3]))
        self.bleu_signature = result['sacrebleu_signature']
        return out


def _first_per_language(langs: list[str], limit: int) -> list[int]:
    """Indices of the first limit // L examples of each of the L target
    languages (all when limit is 0), in order."""
    if not limit:
        return list(range(len(langs)))
    per = max(limit // len(set(langs)), 1)
    seen, keep = {}, []
    for i, lang in enumerate(langs):
        if seen.get(lang, 0) < per:
            seen[lang] = seen.get(lang, 0) + 1
            keep.append(i)
    return keep


def translate_texts(
    model,
    params,
    tokenizer,
    texts: list[str],
    *,
    data_cfg,
    beam_size: int,
    max_len: int,
    length_penalty: float = 1.0,
    batch_size: int = 64,
    target_lang: str | None = None,
    on_cut: Callable[[int], None] | None = None,
    on_unfinished: Callable[[int], None] | None = None,
) -> list[str]:
    """Translations of `texts` on one device, in order; blank lines (and
    lines of which the tokenizer keeps nothing, such as a lone zero-width
    space) stay blank.

    Args:
      model, params: a `Transformer` and its raw parameter tree.
      tokenizer: the run's `Tokenizer` (WORKDIR/spm.model).
      texts: source sentences.
      data_cfg: the run's `config.data` (pairs, max_len, bucket_lengths);
        sources longer than `max_len` tokens are cut, as in evaluation.
      beam_size, max_len, length_penalty: see `evaluation.generate`;
        `max_len` is the run's `eval.max_decode_len`, and errors name it.
      batch_size: sentences per decoding batch (sorted by length).
      target_lang: the '<2xx>' tag to put first; required (and only allowed)
        when the run translates into several languages.
      on_cut: called with the number of sources that were cut, if any.
      on_unfinished: called with the number of translations that reached
        `max_len` tokens without ending (EOS), if any: cut, not finished.
    """
    check_decode_len(max_len, model.config.max_len)
    if not isinstance(data_cfg.max_len, int) or not 2 <= data_cfg.max_len <= (
        model.config.max_len
    ):
        raise ConfigError(
            f'data.max_len={data_cfg.max_len!r} must be in 2..model.max_len '
            f'({model.config.max_len}): the longest source, with its EOS, that '
            'the model can hold.'
        )
    langs = data_lib.target_languages(data_cfg)
    tagged = bool(data_lib.tag_symbols(data_cfg))
    if tagged and target_lang not in langs:
        raise ConfigError(
            f'This model translates into {", ".join(langs)}; choose one with '
            f'--target_lang (got {target_lang!r}).'
        )
    if not tagged and target_lang not in (None, langs[0]):
        raise ConfigError(
            f'This model only translates into {langs[0]}, not {target_lang!r}.'
        )
    prefix = [tokenizer.piece_to_id(data_lib.target_tag(target_lang))] if tagged else []
    encoded = {i: tokenizer.encode(t) for i, t in enumerate(texts) if t.strip()}
    kept = [i for i, ids in encoded.items() if ids]
    src, cut = [], 0
    for i in kept:
        ids = prefix + encoded[i]
        cut += len(ids) > data_cfg.max_len - 1
        src.append(
            np.asarray(ids[: data_cfg.max_len - 1] + [data_lib.EOS_ID], np.int32)
        )
    if cut and on_cut is not None:
        on_cut(cut)
    out = [''] * len(texts)
    if not src:
        return out
    batches = data_lib.eval_batches(
        src, None, batch_size=batch_size, bucket_lengths=eval_lengths(data_cfg.max_len)
    )
    unfinished = 0
    for batch, index in batches:
        tokens = generate(
            model,
            {'params': params},
            batch['inputs'],
            beam_size=beam_size,
            max_len=max_len,
            length_penalty=length_penalty,
        )
        for row, j in zip(np.asarray(tokens), index):
            if j >= 0:
                out[kept[j]] = tokenizer.decode(row.tolist())
                unfinished += not np.any(row == data_lib.EOS_ID)
    if unfinished and on_unfinished is not None:
        on_unfinished(unfinished)
    return out
