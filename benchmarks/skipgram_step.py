"""What the skip-gram trainer's hand-written parts save, measured in one run.

    python benchmarks/skipgram_step.py [--data ../shared/data/words] [--repeats 7]

1. The jitted skip-gram step (`models.skipgram.make_train_chunk`) on one epoch
   of the Brown corpus, with `window_logits`' hand-written gradient against
   autodiff of the same forward (`window_logits.fun`). The two epochs are
   timed alternately, `--repeats` times each; medians compared.
2. `data.words.negative_table` (np.repeat of each word's share) against the
   searchsorted midpoint rule it replaced (the same table), best of 3.
Writes benchmarks/results/skipgram_step.json and .png.
"""

import argparse
import pathlib
import sys
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxdistill import word2vec  # pylint: disable=g-import-not-at-top
from jaxdistill.data import words  # pylint: disable=g-import-not-at-top
from jaxdistill.models import skipgram  # pylint: disable=g-import-not-at-top

DEFAULT_DATA = common.REPO.parent / 'shared' / 'data' / 'words'


def searchsorted_table(counts, size=10_000_000, power=0.75):
    """The table as it was built before: one searchsorted per entry."""
    cdf = np.cumsum(words.unigram_probabilities(counts, power))
    positions = (np.arange(size, dtype=np.float64) + 0.5) / size
    table = np.searchsorted(cdf, positions, side='right')
    return np.minimum(table, len(cdf) - 1).astype(np.int32)


def best_seconds(fn, repeats=3):
    best = float('inf')
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--data_dir', '--data', dest='data', type=pathlib.Path, default=DEFAULT_DATA
    )
    parser.add_argument('--repeats', type=int, default=7)
    common.add_tag(parser)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f'--repeats must be >= 1, got {args.repeats}.')
    sentences = words.read_sentences(args.data / 'brown.txt.gz')
    options = word2vec.Options()
    vocab = words.build_vocab(sentences, options.min_count)
    ids, sentence = words.encode(sentences, vocab)
    vocab_arrays = (
        words.keep_probabilities(vocab.counts, options.sample),
        words.negative_table(vocab.counts),
    )
    lr = word2vec.linear_lr(options, len(ids))
    arrays, lrs = word2vec._epoch_plan(ids, sentence, vocab_arrays, options, 0, lr)  # pylint: disable=protected-access
    s = options.steps_per_call

    def epoch(step, params):
        for i in range(0, len(lrs), s):
            chunk = {k: v[i : i + s] for k, v in arrays.items()}
            params, _ = step(params, chunk, lrs[i : i + s])
        return jax.block_until_ready(params)

    steps, params = {}, {}
    hand_written = skipgram.window_logits
    for name in ('hand_written', 'autodiff'):
        step = skipgram.make_train_chunk(
            options.window, options.negative, options.max_row_updates
        )
        if name == 'autodiff':
            skipgram.window_logits = hand_written.fun
        try:  # The first epoch traces and compiles (not timed).
            params[name] = epoch(
                step, skipgram.init_params(jax.random.key(0), len(vocab), options.dim)
            )
        finally:
            skipgram.window_logits = hand_written
        steps[name] = step
    times = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            t = time.perf_counter()
            params[name] = epoch(step, params[name])
            times[name].append(time.perf_counter() - t)
    median = {name: float(np.median(v)) for name, v in times.items()}
    table_new = best_seconds(lambda: words.negative_table(vocab.counts))
    table_old = best_seconds(lambda: searchsorted_table(vocab.counts))
    same = bool(
        np.array_equal(
            words.negative_table(vocab.counts), searchsorted_table(vocab.counts)
        )
    )
    result = {
        'corpus': 'brown.txt.gz',
        'steps_per_epoch': int(len(lrs)),
        'repeats': args.repeats,
        'epoch_seconds_runs': times,
        'epoch_seconds_median': median,
        'epoch_time_ratio_hand_written_vs_autodiff': median['hand_written']
        / median['autodiff'],
        'negative_table_seconds': {'np_repeat': table_new, 'searchsorted': table_old},
        'negative_table_speedup': table_old / table_new,
        'negative_tables_equal': same,
    }
    common.write_result(common.stem('skipgram_step', args), result)
    print(
        f'epoch: hand-written gradient {median["hand_written"]:.3f} s, autodiff '
        f'{median["autodiff"]:.3f} s (ratio '
        f'{result["epoch_time_ratio_hand_written_vs_autodiff"]:.2f}); negative '
        f'table {table_new:.3f} s vs {table_old:.3f} s (same table: {same})'
    )
    _plot(result, common.RESULTS / f'{common.stem("skipgram_step", args)}.png')


def _plot(result, path):
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3.2))
    runs = result['epoch_seconds_runs']
    ax1.boxplot([runs['autodiff'], runs['hand_written']])
    ax1.set_xticks([1, 2], ['autodiff', 'hand-written'])
    ax1.set_ylabel('seconds / epoch (Brown)')
    tables = result['negative_table_seconds']
    ax2.bar(
        ['searchsorted', 'np.repeat'], [tables['searchsorted'], tables['np_repeat']]
    )
    ax2.set_ylabel('seconds (10 M-entry table)')
    fig.suptitle('Skip-gram step: gradient of the window logits; negative table')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f'wrote {path}')


if __name__ == '__main__':
    from jaxdistill import hostmem  # pylint: disable=g-import-not-at-top

    hostmem.reexec_with_huge_pages()
    main()
