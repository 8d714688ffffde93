"""MT2ST on SST-2: sentiment (primary) + skip-gram (auxiliary), one vocabulary.

The word vocabulary is built from the Brown corpus plus the SST-2 training
text (`data.min_count`); id 0 is PAD, 1 UNK, word i of `words.build_vocab`
is i + 2, in the classifier's input and in skip-gram alike, so both tasks
train the same rows of one embedding table. The skip-gram head is built
only if the method can ever give it a non-zero weight (an STL run has no
skip-gram parameters at all), and its pairs travel in a step's batch only
while the method computes it (`methods.multitask.active_aux`).

`evaluate` reports accuracy and loss on every split of `eval.splits` (the
first also unprefixed as eval/accuracy) and the Spearman correlation of the
shared embeddings on the word-similarity sets (evaluation only).
"""

import functools
import os
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np

from jaxdistill import configuration
from jaxdistill import losses
from jaxdistill import registry
from jaxdistill import sharding as sharding_lib
from jaxdistill.data import batching
from jaxdistill.data import images as images_lib
from jaxdistill.data import multitask as multitask_data
from jaxdistill.data import sst2 as sst2_lib
from jaxdistill.data import words
from jaxdistill.errors import ConfigError, DataError
from jaxdistill.evaluation import word_similarity
from jaxdistill.methods import multitask as multitask_method
from jaxdistill.models import multitask as multitask_model

OFFSET = 2  # Word ids start after PAD (0) and UNK (1).
AUX_TASKS = ('skipgram',)


def _subset(sentences, labels, n: int):
    """A fixed random subset of n examples (0 = all), in file order
    (`batching.subset_rows`)."""
    rows = batching.subset_rows(len(labels), n)
    if rows is None:
        return sentences, labels
    return [sentences[i] for i in rows], labels[rows]


_CONTRACTION = re.compile(r"^(.*\w)(n't|'s|'re|'ve|'ll|'d|'m)$")


def split_contractions(tokens: list[str]) -> list[str]:
    """Contractions split as SST-2 (Penn Treebank) splits them: "didn't" ->
    "did n't", "can't" -> "ca n't", "atlanta's" -> "atlanta 's". Brown keeps
    them whole, so without this the negation and possessive tokens the
    classifier reads would get no skip-gram context from Brown."""
    out = []
    for token in tokens:
        match = _CONTRACTION.match(token)
        out.extend(match.groups() if match else (token,))
    return out


def load_text(data):
    """The task's text from config `data`: (SST-2 training phrases, labels,
    skip-gram corpus, vocabulary).

    The vocabulary counts Brown plus the SST-2 training text (lowercased);
    the skip-gram corpus is Brown, plus that text if
    `data.skipgram.include_sst2_text`.
    """
    sentences, labels = _subset(
        *sst2_lib.load_split(data.sst2_dir, 'train', 'data.sst2_dir'),
        data.max_train_examples,
    )
    sst_text = [s.lower().split() for s in sentences]
    try:
        brown = [split_contractions(s) for s in words.read_sentences(data.corpus)]
    except DataError as e:
        raise DataError(f'data.corpus: {e}') from None
    vocab = words.build_vocab(brown + sst_text, data.min_count)
    corpus = brown + (sst_text if data.skipgram.include_sst2_text else [])
    return sentences, labels, corpus, vocab


def _head(m) -> multitask_model.PooledClassifier:
    """The sentence head config `model` describes."""
    return multitask_model.PooledClassifier(
        num_classes=2,
        pooling=m.pooling,
        hidden=tuple(m.hidden),
        filter_widths=tuple(m.filter_widths),
        num_filters=m.num_filters,
        dropout_rate=m.dropout_rate,
    )


@registry.register('task', 'mt2st_sst2')
class MT2STSST2Task:
    """SST-2 classification with an optional skip-gram head on a shared table."""

    # The data and eval keys this task reads, besides the spine's
    # (trainer.check_keys).
    config_keys = {
        'data': frozenset(
            {
                'sst2_dir',
                'corpus',
                'similarity',
                'skipgram',
                'batch_size',
                'max_len',
                'max_train_examples',
                'min_count',
            }
        ),
        'eval': frozenset({'splits'}),
    }

    @staticmethod
    def check_config(config):
        """ConfigError for settings this task refuses, without reading data:
        the data's counts, the split names, the weights' schedules (and that
        each auxiliary task is one this task has) and the model's fields."""
        d, sg = config.data, config.data.skipgram
        configuration.check_counts(
            ('data.batch_size', d.batch_size, 1),
            ('data.max_len', d.max_len, 1),
            ('data.min_count', d.min_count, 1),
            ('data.max_train_examples', d.max_train_examples, 0),
            ('data.skipgram.pairs', sg.pairs, 1),
            ('data.skipgram.negatives', sg.negatives, 1),
            ('data.skipgram.window', sg.window, 1),
            ('eval.batch_size', config.eval.batch_size, 1),
            ('eval.max_examples', config.eval.max_examples, 0),
        )
        if not isinstance(sg.sample, (int, float)) or sg.sample < 0:
            raise ConfigError(
                f'data.skipgram.sample={sg.sample!r} must be a number >= 0 '
                '(0 = no subsampling of frequent words).'
            )
        splits = tuple(config.eval.splits)
        unknown = [s for s in splits if s not in sst2_lib.SPLITS]
        if not splits or unknown:
            raise ConfigError(
                f'eval.splits={splits}: each must be one of '
                f'{", ".join(sst2_lib.SPLITS)}'
                + (f' (not {unknown[0]!r}).' if unknown else '.')
            )
        if config.method.name == 'multitask':
            multitask_method.check_options(config.method, AUX_TASKS)
        multitask_model.check_fields(_head(config.model), config.model.dim)

    def __init__(self, config, workdir: str, mesh):
        self.config, self.mesh = config, mesh
        d, sg = config.data, config.data.skipgram
        self._multiple = sharding_lib.batch_axes(mesh)
        k = config.get('microbatches', 1)
        if d.batch_size % (self._multiple * k) or sg.pairs % (self._multiple * k):
            raise ConfigError(
                f'data.batch_size={d.batch_size} and data.skipgram.pairs='
                f'{sg.pairs} must be multiples of the {self._multiple} data devices'
                + (f' times microbatches={k} ({self._multiple * k}).' if k > 1 else '.')
            )
        sentences, labels, corpus, vocab = load_text(d)
        self.index = {w: i + OFFSET for i, w in enumerate(vocab.words)}
        self.vocab_size = len(vocab) + OFFSET
        # Encoded one word longer than max_len, to count the sentences cut
        # (`{split}_truncated` in the summary).
        tokens, n = sst2_lib.cut(sst2_lib.encode(sentences, self.index, d.max_len + 1))
        train, cut = (tokens, labels), {'train_truncated': n}
        self._eval_data = {}
        for split in config.eval.splits:
            s, y = _subset(
                *sst2_lib.load_split(d.sst2_dir, split, 'data.sst2_dir'),
                config.eval.max_examples,
            )
            tokens, cut[f'{split}_truncated'] = sst2_lib.cut(
                sst2_lib.encode(s, self.index, d.max_len + 1)
            )
            self._eval_data[split] = tokens, y
        # Read now, so a missing file stops the run before it trains.
        self._similarity = {}
        for name, path in (d.similarity or {}).items():
            try:
                self._similarity[name] = word_similarity.read_pairs(pathlib.Path(path))
            except DataError as e:
                raise DataError(
                    f'data.similarity.{name}: {e} (evaluation only; '
                    "--config.data.similarity='{}' evaluates none)"
                ) from None
        method = config.method
        off = multitask_method.aux_off_steps(
            method.get('aux_weights', {}), method.get('threshold', 0.0)
        )
        self.aux_off_steps = {k: v for k, v in off.items() if k in AUX_TASKS}
        with_skipgram = self.aux_off_steps.get('skipgram', 0) != 0
        samplers = {}
        if with_skipgram:
            ids, sentence = words.encode(corpus, vocab)
            samplers['skipgram'] = multitask_data.SkipgramPairs(
                ids + OFFSET,
                sentence,
                vocab.counts,
                offset=OFFSET,
                pairs=sg.pairs,
                negatives=sg.negatives,
                window=sg.window,
                sample=sg.sample,
                seed=config.seed,
            )
            self._corpus_tokens = len(ids)

        def active(step):
            return tuple(
                n
                for n in multitask_method.active_aux(self.aux_off_steps, step)
                if n in samplers
            )

        primary = images_lib.ImageBatcher(
            *train, batch_size=d.batch_size, seed=config.seed, key='tokens'
        )
        self.train_batches = multitask_data.MultiTaskBatches(primary, samplers, active)
        m = config.model
        head = _head(m)
        pretrained = None
        if m.get('init_vectors') and not self._restores(workdir, m.init_vectors):
            pretrained = self._pretrained_rows(m.init_vectors, m.dim)
        self.model_fns = multitask_model.make_fns(
            head,
            vocab_size=self.vocab_size,
            dim=m.dim,
            embed_init_scale=m.embed_init_scale,
            with_skipgram=with_skipgram,
            pretrained=pretrained,
        )
        unk = float(np.mean(train[0][train[0] > 0] == sst2_lib.UNK))
        self.summary = {
            'train_examples': len(train[1]),
            'vocab_size': self.vocab_size,
            'unk_fraction': unk,
            **cut,
            'skipgram_head': with_skipgram,
            **{
                f'{name}_off_step': -1 if s is None else s
                for name, s in self.aux_off_steps.items()
            },
        }
        if pretrained is not None:
            self.summary['init_vectors_words'] = len(pretrained[0])
        if with_skipgram:
            self.summary['skipgram_corpus_tokens'] = self._corpus_tokens
            self.summary['skipgram_steps_per_pass'] = samplers[
                'skipgram'
            ].steps_per_pass

    @staticmethod
    def _restores(workdir: str, path: str) -> bool:
        """Whether `workdir` holds a checkpoint and the vectors file `path`
        is gone: they set only the first table, which the checkpoint holds,
        so the run resumes (or is evaluated) without them."""
        from jaxdistill import cli  # pylint: disable=g-import-not-at-top

        if os.path.exists(path) or not workdir:
            return False
        return cli.has_checkpoint(workdir)

    def _pretrained_rows(self, path, dim):
        """(ids, [n, dim] vectors) for the vocabulary's words found in the
        word2vec text file `path` (model.init_vectors)."""
        from jaxdistill import word2vec  # pylint: disable=g-import-not-at-top

        names, vectors = word2vec.load_word2vec(path)
        if vectors.shape[1] != dim:
            raise ConfigError(
                f'model.init_vectors={path!r} holds {vectors.shape[1]}-dimensional '
                f'vectors, but model.dim={dim}: give --config.model.dim='
                f'{vectors.shape[1]}, or vectors of {dim} (python -m '
                f'jaxdistill.word2vec --dim {dim} ...).'
            )
        found = [(self.index[w], i) for i, w in enumerate(names) if w in self.index]
        if not found:
            raise DataError(
                f'{path}: none of its {len(names)} words is in the task '
                f'vocabulary ({self.vocab_size - OFFSET} words, lowercased).'
            )
        ids, rows = (np.asarray(x) for x in zip(*found))
        return ids, vectors[rows]

    def data_summary(self) -> dict:
        return dict(
            self.summary, batches_per_epoch=self.train_batches.batches_per_epoch()
        )

    def init_batch(self) -> dict:
        return self.train_batches.batch_at(0, 0)

    @functools.cached_property
    def _eval_step(self):
        fns = self.model_fns

        def step(params, batch):
            logits = fns.apply(params, batch, train=False)
            labels, where = fns.labels(batch)
            correct = losses.accuracy(logits, labels, where=where)
            nll = losses.cross_entropy(logits, labels, where=where)
            return jnp.sum(correct), jnp.sum(nll)

        return jax.jit(step)

    @functools.cached_property
    def _eval_batches(self) -> dict:
        sharding = sharding_lib.batch_sharding(self.mesh)
        out = {}
        for split, (tokens, labels) in self._eval_data.items():
            batches = images_lib.eval_batches(
                tokens,
                labels,
                batch_size=self.config.eval.batch_size,
                batch_multiple=self._multiple,
                key='tokens',
            )
            out[split] = [sharding_lib.global_batch(b, sharding) for b in batches]
        return out

    def evaluate(self, params) -> dict:
        """Accuracy/loss per split of eval.splits; word-similarity Spearman."""
        metrics = {}
        for i, (split, batches) in enumerate(self._eval_batches.items()):
            sums = jax.device_get([self._eval_step(params, b) for b in batches])
            n = len(self._eval_data[split][1])
            acc, nll = (float(np.sum([s[k] for s in sums])) / n for k in (0, 1))
            metrics[f'eval/{split}/accuracy'] = acc
            metrics[f'eval/{split}/loss'] = nll
            if i == 0:
                metrics['eval/accuracy'], metrics['eval/loss'] = acc, nll
        metrics.update(self.word_similarity(params))
        return metrics

    def word_similarity(self, params) -> dict:
        """{'eval/NAME': Spearman, 'eval/NAME_oov_fraction': the share of
        its pairs left out, a word not in the vocabulary} for each file of
        data.similarity (runs with other vocabularies are compared on other
        pairs)."""
        if not self._similarity:
            return {}
        vectors = np.asarray(jax.device_get(params['embed']))
        out = {}
        for name, pairs in self._similarity.items():
            r = word_similarity.evaluate(vectors, self.index, pairs)
            out[f'eval/{name}'] = r['spearman']
            out[f'eval/{name}_oov_fraction'] = r['oov_fraction']
        return out
