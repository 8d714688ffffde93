"""Classification tasks (images; text) with multi-exit models and anytime eval.

`evaluate` reports the loss and accuracy of every exit and, when the model
has more than one exit, the early-exit curve: accuracy and measured inference
time (as a fraction of the plain network's) at each confidence threshold.
"""

import dataclasses
import functools
import os
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from jaxdistill import cli
from jaxdistill import configuration
from jaxdistill import losses
from jaxdistill import registry
from jaxdistill import sharding as sharding_lib
from jaxdistill.data import batching
from jaxdistill.data import images as images_lib
from jaxdistill.data import sst2 as sst2_lib
from jaxdistill.errors import ConfigError
from jaxdistill.evaluation import early_exit
from jaxdistill.models import multi_exit
from jaxdistill.models import resnet  # noqa: F401  (registers 'resnet')
from jaxdistill.models import text_classifier  # noqa: F401  (registers it)
from jaxdistill.models import text_models  # noqa: F401  (registers them)


def build_model(model_cfg, **fixed):
    """The registered model `model_cfg.name` with the other fields as attributes.

    `fixed` (num_classes, data statistics) come from the data, not the config.
    """
    cls = registry.get('model', model_cfg.get('name', ''))
    valid = {f.name for f in dataclasses.fields(cls)} - {'parent', 'name'} - set(fixed)
    options = {k: v for k, v in model_cfg.items() if k != 'name'}
    configuration.check_known_keys(
        'model', options, valid, owner=f'model {model_cfg.name!r}'
    )
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    try:
        return cls(**options, **fixed)
    except (ValueError, TypeError) as e:
        raise ConfigError(f'config.model: {e}') from e


class ClassificationTask:
    """Shared evaluation; subclasses set train_batches, eval_batches, model."""

    input_key = 'image'
    # 'train/tokens' of a classifier counts examples (one label each), so the
    # trainer logs it as train/examples_per_s and the progress line as ex/s.
    throughput = ('examples', 'ex')

    def _setup_model(self, model, summary: dict):
        self.model = model
        self.model_fns = multi_exit.make_fns(model, self.input_key)
        self.summary = summary
        self.last_curve = []

    def data_summary(self) -> dict:
        return dict(
            self.summary, batches_per_epoch=self.train_batches.batches_per_epoch()
        )

    def start_notes(self) -> list[str]:
        """The teachers read (rl_multi_teacher, kd), and at which step."""
        return list(getattr(self, 'teacher_notes', []))

    def init_batch(self) -> dict:
        return self.train_batches.batch_at(0, 0)

    @functools.cached_property
    def _eval_step(self):
        fns = self.model_fns

        def step(params, batch):
            logits = fns.apply_exits(params, batch, train=False)['logits']
            labels, where = fns.labels(batch)
            probs = [jax.nn.softmax(z.astype(jnp.float32), axis=-1) for z in logits]
            nll = jnp.stack(
                [losses.cross_entropy(z, labels, where=where) for z in logits]
            )
            return {
                'confidence': jnp.stack([jnp.max(p, axis=-1) for p in probs]),
                'correct': jnp.stack([losses.argmax(z) == labels for z in logits]),
                'nll': jnp.sum(nll, axis=1),
            }

        return jax.jit(step)

    def _device_batches(self):
        sharding = sharding_lib.batch_sharding(self.mesh)
        return [sharding_lib.global_batch(b, sharding) for b in self.eval_batches]

    @functools.cached_property
    def _predict_step(self):
        fns = self.model_fns
        return jax.jit(
            lambda params, batch: losses.argmax(
                fns.apply_exits(params, batch, train=False)['logits'][-1]
            )
        )

    def predict(self, params):
        """(predicted class int32 [N], valid bool [N]): the deepest exit's
        class for each evaluation example (padding rows not valid). The
        trainer compares models' predictions with it: codistillation's
        agreement and churn."""
        # Every batch dispatched, then one fetch: a device_get per batch
        # would leave the device idle while the host waits on each.
        preds = jax.device_get(
            [self._predict_step(params, b) for b in self._device_batches()]
        )
        valid = np.concatenate([b['label'] >= 0 for b in self.eval_batches])
        return np.concatenate(preds).astype(np.int32), valid

    def evaluate(self, params) -> dict:
        """Per-exit loss/accuracy, and the early-exit curve with measured times."""
        e = self.config.eval
        batches = self._device_batches()
        outs = jax.device_get([self._eval_step(params, b) for b in batches])
        real = np.concatenate([b['label'] >= 0 for b in self.eval_batches])
        confidence = np.concatenate([o['confidence'] for o in outs], axis=1)[:, real]
        correct = np.concatenate([o['correct'] for o in outs], axis=1)[:, real]
        nll = np.sum([o['nll'] for o in outs], axis=0) / real.sum()
        k = self.model_fns.num_exits
        metrics = {'eval/loss': float(nll[-1]), 'eval/accuracy': correct[-1].mean()}
        for i in range(k - 1):
            metrics[f'eval/accuracy_exit{i}'] = float(correct[i].mean())
            metrics[f'eval/loss_exit{i}'] = float(nll[i])
        cost = None
        if e.timing_repeats > 0:
            seconds, plain = early_exit.measure_prefix_seconds(
                self.model_fns.apply_exits, params, batches, k, e.timing_repeats
            )
            cost = [s / plain for s in seconds]
            metrics['eval/seconds_plain'] = plain
            for i, c in enumerate(cost):
                metrics[f'eval/time_fraction_exit{i}'] = c
        if k > 1:
            self.last_curve = early_exit.early_exit_curve(
                confidence, correct, e.thresholds, cost
            )
            for p in self.last_curve:
                name = _threshold_name(p['threshold'])
                metrics[f'{name}/accuracy'] = p['accuracy']
                if cost is not None:
                    metrics[f'{name}/time_fraction'] = p['time_fraction']
        return {key: float(v) for key, v in metrics.items()}


def _check_eval_and_batch_settings(config) -> None:
    """ConfigError for the batch sizes or early-exit thresholds, before any
    data is read."""
    configuration.check_counts(
        ('data.batch_size', config.data.batch_size, 1),
        ('eval.batch_size', config.eval.batch_size, 1),
        # 0: all. A negative count would keep all but that many.
        ('data.max_train_examples', config.data.get('max_train_examples', 0), 0),
        ('eval.max_examples', config.eval.get('max_examples', 0), 0),
    )
    augment = config.data.get('augment', 'none')
    if augment not in images_lib.AUGMENTATIONS:
        raise ConfigError(
            f'data.augment={augment!r} is unknown; valid: '
            f'{", ".join(images_lib.AUGMENTATIONS)}.'
        )
    _check_thresholds(config.eval.get('thresholds', ()))


def _threshold_name(threshold: float) -> str:
    """The metrics' name for an early-exit threshold."""
    return f'eval/early_exit_{threshold:g}'


def _check_thresholds(thresholds) -> None:
    """ConfigError unless `eval.thresholds` are numbers in [0, 1] whose
    metric names differ (two that print alike under %g would share one)."""
    try:
        values = [float(t) for t in thresholds]
    except (TypeError, ValueError):
        raise ConfigError(
            f'eval.thresholds={thresholds!r}: expected softmax confidences, '
            'numbers in [0, 1], e.g. (0.5, 0.9, 0.99).'
        ) from None
    names = {}
    for t in values:
        if not 0.0 <= t <= 1.0:  # NaN too.
            raise ConfigError(
                f'eval.thresholds holds {t:g}: a softmax confidence threshold is '
                'in [0, 1] (1.0 sends every example to the deepest exit).'
            )
        name = _threshold_name(t)
        if name in names:
            raise ConfigError(
                f'eval.thresholds holds {names[name]!r} and {t!r}, which would '
                f'both be logged as {name}/...: thresholds must differ within '
                'their first six significant digits.'
            )
        names[name] = t


def _batch_multiple(config, mesh) -> int:
    """Rows every batch must be a multiple of: the devices its rows are split
    over and, for codistillation, the replicas whose blocks it holds
    (`sharding.batch_multiple`); training batches also times microbatches.
    Evaluation batches are padded up to it."""
    _check_eval_and_batch_settings(config)
    replicas = config.method.get('num_replicas', 1) if 'method' in config else 1
    n = sharding_lib.batch_multiple(mesh, replicas)
    k = config.get('microbatches', 1)
    if config.data.batch_size % (n * k):
        what = (
            f'{n} (the devices its rows are split over, and the {replicas} '
            'replicas whose blocks it holds)'
            if replicas > 1
            else f'{n} devices on the data axis'
        )
        raise ConfigError(
            f'data.batch_size={config.data.batch_size} must be a multiple of '
            + what
            + (f' times microbatches={k} ({n * k}).' if k > 1 else '.')
        )
    return n


def _check_text_data(d):
    """ConfigError naming the first text-data setting the task cannot use."""
    configuration.check_counts(
        ('data.max_len', d.max_len, 1),
        ('data.vocab_size', d.vocab_size, 3),  # PAD, UNK and a word at least.
    )
    if d.eval_split not in sst2_lib.SPLITS:
        raise ConfigError(
            f'data.eval_split={d.eval_split!r}; valid: {", ".join(sst2_lib.SPLITS)}.'
        )


def _subset(arrays, n: int):
    """A fixed random subset of n examples (0 = all), in file order
    (`batching.subset_rows`)."""
    rows = batching.subset_rows(len(arrays[1]), n)
    return arrays if rows is None else tuple(a[rows] for a in arrays)


@registry.register('task', 'image_classification')
class ImageClassificationTask(ClassificationTask):
    """MNIST or CIFAR-10 with a multi-exit ResNet."""

    # The data and eval keys this task reads, besides the spine's
    # (trainer.check_keys).
    config_keys = {
        'data': frozenset(
            {
                'dataset',
                'data_dir',
                'cache_dir',
                'augment',
                'batch_size',
                'eval_split',
                'max_train_examples',
            }
        ),
        'eval': frozenset({'thresholds', 'timing_repeats'}),
    }

    @staticmethod
    def check_config(config):
        """ConfigError for settings this task refuses, without reading data
        (the model is built with stand-in pixel statistics)."""
        _check_eval_and_batch_settings(config)
        dataset = config.data.dataset
        if dataset not in images_lib.NUM_CLASSES:
            raise ConfigError(
                f'data.dataset={dataset!r}; valid: '
                f'{" | ".join(images_lib.NUM_CLASSES)}.'
            )
        build_model(
            config.model,
            num_classes=images_lib.NUM_CLASSES[dataset],
            pixel_mean=(0.5,),
            pixel_std=(0.25,),
        )

    def __init__(self, config, workdir: str, mesh):
        self.config, self.mesh = config, mesh
        d = config.data
        multiple = _batch_multiple(config, mesh)
        started = time.time()
        cache = d.cache_dir or os.path.join(workdir, 'cache')
        train = images_lib.load_images(d.dataset, d.data_dir, 'train', cache)
        test = images_lib.load_images(d.dataset, d.data_dir, d.eval_split, cache)
        train = _subset(train, d.max_train_examples)
        test = _subset(test, config.eval.max_examples)
        if d.batch_size > len(train[1]):
            raise ConfigError(
                f'data.batch_size={d.batch_size} is more than the '
                f'{len(train[1])} training images'
                + (
                    f' (data.max_train_examples={d.max_train_examples})'
                    if d.max_train_examples
                    else ''
                )
                + '.'
            )
        self.train_batches = images_lib.ImageBatcher(
            *train, batch_size=d.batch_size, seed=config.seed, augment=d.augment
        )
        self.eval_batches = images_lib.eval_batches(
            *test, batch_size=config.eval.batch_size, batch_multiple=multiple
        )
        mean, std = images_lib.channel_stats(train[0])
        num_classes = images_lib.NUM_CLASSES[d.dataset]
        model = build_model(
            config.model, num_classes=num_classes, pixel_mean=mean, pixel_std=std
        )
        self._setup_model(
            model,
            {
                'train_examples': len(train[1]),
                'eval_examples': len(test[1]),
                'num_classes': num_classes,
                'image_shape': list(train[0].shape[1:]),
                'num_exits': model.num_exits,
            },
        )
        logging.info('Data ready in %.1fs: %s', time.time() - started, self.summary)


@registry.register('task', 'text_classification')
class TextClassificationTask(ClassificationTask):
    """SST-2 sentiment with a multi-exit Transformer encoder classifier."""

    config_keys = {
        'data': frozenset(
            {
                'data_dir',
                'batch_size',
                'eval_split',
                'max_len',
                'max_train_examples',
                'min_count',
                'tokenizer',
                'vocab_size',
                'teachers',
                'teacher_cache_dir',
            }
        ),
        'eval': frozenset({'thresholds', 'timing_repeats'}),
    }

    input_key = 'tokens'

    @staticmethod
    def check_config(config):
        """ConfigError for settings this task refuses, without reading data
        (the model is built with the configured vocabulary size)."""
        _check_text_data(config.data)
        _check_eval_and_batch_settings(config)
        build_model(
            config.model,
            num_classes=2,
            vocab_size=config.data.vocab_size,
            max_len=config.data.max_len,
        )

    def __init__(self, config, workdir: str, mesh):
        self.config, self.mesh = config, mesh
        d = config.data
        _check_text_data(d)
        multiple = _batch_multiple(config, mesh)
        sentences, labels = sst2_lib.load_split(d.data_dir, 'train')
        rows = _subset((np.arange(len(labels)), labels), d.max_train_examples)[0]
        test_sentences, test_labels = sst2_lib.load_split(d.data_dir, d.eval_split)
        # Encoded one token longer than max_len, to count the sentences cut.
        encode_wide, vocab_size = sst2_lib.text_encoder(
            d.get('tokenizer', 'words'),
            sentences,
            d.vocab_size,
            d.max_len + 1,
            workdir,
            d.get('min_count', 1),
            # No checkpoint yet: no embedding row belongs to a word.
            remake_stale=not cli.has_checkpoint(workdir),
        )
        train = _subset((encode_wide(sentences), labels), d.max_train_examples)
        test = _subset(
            (encode_wide(test_sentences), test_labels), config.eval.max_examples
        )
        (train_tokens, train_cut), (test_tokens, test_cut) = map(
            sst2_lib.cut, (train[0], test[0])
        )
        train, test = (train_tokens, train[1]), (test_tokens, test[1])
        # Sentences longer than data.max_len tokens, cut to it.
        cut = {'train_truncated': train_cut, 'eval_truncated': test_cut}
        if d.get('teachers'):  # Frozen teachers' logits ride with each batch.
            from jaxdistill import teacher_cache  # pylint: disable=g-import-not-at-top

            read = [sentences[i] for i in rows]
            teachers = tuple(d.teachers)
            frozen = teacher_cache.frozen_logits(workdir, teachers, read)
            if frozen is not None:
                self.teacher_notes = [
                    'data.teachers: the logits this run froze at its start '
                    f'({os.path.join(workdir, teacher_cache.FROZEN)}) are used, '
                    'not the teachers as they are now.'
                ]
            else:
                self.teacher_notes = [
                    n
                    for t in teachers
                    if (n := teacher_cache.teacher_note(t, 'data.teachers'))
                ]
            self.train_batches = teacher_cache.with_teacher_logits(
                *train,
                read,
                teachers,
                batch_size=d.batch_size,
                seed=config.seed,
                cache_dir=d.get('teacher_cache_dir', ''),
                student_workdir=workdir,
                frozen=frozen,
            )
        else:
            self.train_batches = images_lib.ImageBatcher(
                *train, batch_size=d.batch_size, seed=config.seed, key='tokens'
            )
        self.eval_batches = images_lib.eval_batches(
            *test,
            batch_size=config.eval.batch_size,
            batch_multiple=multiple,
            key='tokens',
        )
        model = build_model(
            config.model,
            num_classes=2,
            vocab_size=vocab_size,
            max_len=d.max_len,
        )
        unk = float(np.mean(train[0][train[0] > 0] == sst2_lib.UNK))
        eval_unk = float(np.mean(test[0][test[0] > 0] == sst2_lib.UNK))
        self._setup_model(
            model,
            {
                'train_examples': len(train[1]),
                'eval_examples': len(test[1]),
                'vocab_size': vocab_size,
                'unk_fraction': unk,
                'eval_unk_fraction': eval_unk,
                **cut,
                'num_exits': model.num_exits,
            },
        )
