"""Our JAX skip-gram against gensim's Word2Vec on the Brown corpus, one run.

    python benchmarks/word2vec_vs_gensim.py [--quick] [--data ../shared/data/words]
        [--centers 512 --steps-per-call 32]   # bigger on a GPU, e.g. 8192 / 64

Both train skip-gram with negative sampling with the same settings (d=100,
window 5, 5 negatives, min_count 5, sample 1e-3, lr 0.025 -> 1e-4, 10
epochs) on the same sentences in the same process, one after the other,
`--repeats` times (order alternating); gensim with workers=2. Speeds are the
median repeat (this machine's speed varies by ±20% from minute to minute),
scores the mean over repeats. Both sets of vectors are scored by the same code
(`evaluation.word_similarity`) on WordSim-353 and SimLex-999, pairs out of
vocabulary left out. Words per second = corpus tokens (before vocabulary
and subsampling) × epochs / training seconds; ours includes compilation
and batch preparation, gensim's is `Word2Vec.train`; vocabulary building
is timed apart for both. CPU seconds (all threads, vocabulary included)
are recorded too: on a machine shared with other jobs the wall-clock ratio
depends on how the scheduler splits the cores. `--quick` uses a tenth of the corpus and 2 epochs
(a smoke test; its figures mean little). Needs `pip install gensim`.
Writes benchmarks/results/word2vec_vs_gensim.json and .png.
"""

import argparse
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxdistill import word2vec  # pylint: disable=g-import-not-at-top
from jaxdistill.data import words  # pylint: disable=g-import-not-at-top
from jaxdistill.evaluation import word_similarity  # pylint: disable=g-import-not-at-top

DEFAULT_DATA = common.REPO.parent / 'shared' / 'data' / 'words'


def run_gensim(sentences, epochs, seed):
    """-> (vectors [V, D], word -> row, vocab seconds, train seconds)."""
    from gensim.models import Word2Vec  # pylint: disable=g-import-not-at-top

    start = time.perf_counter()
    model = Word2Vec(
        sg=1,
        vector_size=100,
        window=5,
        negative=5,
        min_count=5,
        sample=1e-3,
        alpha=0.025,
        min_alpha=1e-4,
        workers=2,
        seed=seed,
    )
    model.build_vocab(sentences)
    vocab_s = time.perf_counter() - start
    start = time.perf_counter()
    model.train(sentences, total_examples=model.corpus_count, epochs=epochs)
    train_s = time.perf_counter() - start
    return model.wv.vectors, dict(model.wv.key_to_index), vocab_s, train_s


def run_ours(sentences, options):
    """-> (vectors [V, D], word -> row, vocab seconds, train seconds)."""
    start = time.perf_counter()
    vocab = words.build_vocab(sentences, options.min_count)
    ids, sentence = words.encode(sentences, vocab)
    vocab_s = time.perf_counter() - start
    result = word2vec.train(ids, sentence, vocab, options)
    return result['vectors'], vocab.index, vocab_s, result['seconds']


def plot(result, path):
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    x = np.arange(2)
    for i, who in enumerate(('gensim', 'ours')):
        vals = [result[f'{who}_ws353'], result[f'{who}_simlex']]
        ax1.bar(x + (i - 0.5) * 0.35, vals, 0.35, label=who)
    ax1.set_xticks(x, ['WordSim-353', 'SimLex-999'])
    ax1.set_ylabel('Spearman ρ')
    ax1.legend()
    speeds = [result['gensim_words_per_s'], result['ours_words_per_s']]
    ax2.bar(['gensim (2 workers)', 'ours (JAX)'], np.array(speeds) / 1e3)
    ax2.set_ylabel('thousand words / s')
    fig.suptitle(f'Skip-gram on {result["corpus"]}, {result["epochs"]} epochs')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f'wrote {path}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true')
    parser.add_argument(
        '--data_dir', '--data', dest='data', type=pathlib.Path, default=DEFAULT_DATA
    )
    parser.add_argument('--epochs', type=int, default=10)
    parser.add_argument('--centers', type=int, default=word2vec.Options.centers)
    parser.add_argument(
        '--steps-per-call', type=int, default=word2vec.Options.steps_per_call
    )
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--repeats', type=int, default=3, help='interleaved runs of each; median speed'
    )
    args = parser.parse_args()
    sentences = words.read_sentences(args.data / 'brown.txt.gz')
    epochs = args.epochs
    if args.quick:
        sentences, epochs = sentences[: len(sentences) // 10], 2
    if args.repeats < 1:
        parser.error(f'--repeats must be >= 1, got {args.repeats}.')
    tokens = sum(len(s) for s in sentences)
    sets = {
        'ws353': word_similarity.read_pairs(args.data / 'wordsim353.tsv'),
        'simlex': word_similarity.read_pairs(args.data / 'simlex999.txt'),
    }
    options = word2vec.Options(
        epochs=epochs,
        seed=args.seed,
        centers=args.centers,
        steps_per_call=args.steps_per_call,
    )
    result = {'corpus': 'brown.txt.gz', 'quick': args.quick, 'epochs': epochs}
    result['tokens'] = tokens
    result['repeats'] = args.repeats
    runs = {
        'gensim': lambda: run_gensim(sentences, epochs, args.seed),
        'ours': lambda: run_ours(sentences, options),
    }
    per_run = {who: [] for who in runs}
    for rep in range(args.repeats):
        # Alternate which goes first, so a machine that drifts during the
        # benchmark slows both alike.
        for who in sorted(runs, reverse=rep % 2 == 1):
            cpu = time.process_time()
            vectors, index, vocab_s, train_s = runs[who]()
            r = {
                'cpu_seconds': round(time.process_time() - cpu, 3),
                'vocab_size': len(index),
                'vocab_seconds': round(vocab_s, 3),
                'train_seconds': round(train_s, 3),
                'words_per_s': tokens * epochs / train_s,
            }
            for name, pairs in sets.items():
                score = word_similarity.evaluate(vectors, index, pairs)
                r[name], r[f'{name}_oov_fraction'] = (
                    score['spearman'],
                    score['oov_fraction'],
                )
            per_run[who].append(r)
            print(
                f'repeat {rep + 1}/{args.repeats} {who}: {train_s:.1f} s, '
                f'{r["words_per_s"]:,.0f} words/s, WS353 {r["ws353"]:.4f}, '
                f'SimLex {r["simlex"]:.4f}'
            )
    for who, runs_ in per_run.items():
        # Speed: the median repeat; scores: the mean (gensim's 2 workers make
        # its vectors vary from run to run; ours are the same every repeat).
        result[f'{who}_vocab_size'] = runs_[0]['vocab_size']
        for key in runs_[0]:
            if key == 'vocab_size':
                continue
            values = [r[key] for r in runs_]
            agg = np.median if key.endswith(('seconds', 'words_per_s')) else np.mean
            result[f'{who}_{key}'] = float(agg(values))
        result[f'{who}_words_per_s_runs'] = [r['words_per_s'] for r in runs_]
        result[f'{who}_ws353_runs'] = [r['ws353'] for r in runs_]
        result[f'{who}_simlex_runs'] = [r['simlex'] for r in runs_]
    result['speed_ratio_runs'] = [
        o['words_per_s'] / g['words_per_s']
        for o, g in zip(per_run['ours'], per_run['gensim'])
    ]
    result['speed_ratio'] = result['ours_words_per_s'] / result['gensim_words_per_s']
    result['options'] = {k: getattr(options, k) for k in options.__dataclass_fields__}
    result['targets_met'] = {
        'ws353': result['ours_ws353'] >= result['gensim_ws353'],
        'simlex': result['ours_simlex'] >= result['gensim_simlex'],
        'speed': result['speed_ratio'] >= 1.0,
    }
    print(
        f'speed ratio ours / gensim (medians): {result["speed_ratio"]:.2f}; '
        f'per repeat {", ".join(f"{r:.2f}" for r in result["speed_ratio_runs"])}'
    )
    name = 'word2vec_vs_gensim' + ('_quick' if args.quick else '')
    common.write_result(name, result)
    plot(result, common.RESULTS / f'{name}.png')


if __name__ == '__main__':
    from jaxdistill import hostmem  # pylint: disable=g-import-not-at-top

    hostmem.reexec_with_huge_pages()
    main()
