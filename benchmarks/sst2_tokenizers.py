"""Words or SentencePiece pieces for the SST-2 text classifier.

    python benchmarks/sst2_tokenizers.py [--steps 600] [--seed 0]

Trains configs/self_distill_sst2.py four times, in-process: the single-exit
baseline (method=supervised) and self-distillation, each with
`data.tokenizer='words'` and `'sentencepiece'`, and reports GLUE dev accuracy
of every exit. Also, on GLUE dev: the share of words outside the word
vocabulary, and tokens per sentence for each tokenizer. Accuracy only (no
timing), one seed. Writes benchmarks/results/sst2_tokenizers.{json,png}.
"""

import argparse
import pathlib
import sys
import tempfile

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxdistill import configuration  # pylint: disable=g-import-not-at-top
from jaxdistill import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
from jaxdistill.data import sst2  # pylint: disable=g-import-not-at-top

CONFIG = common.REPO / 'configs' / 'self_distill_sst2.py'
TOKENIZERS = ('words', 'sentencepiece')
METHODS = ('supervised', 'self_distill')


def run(method, tokenizer, args, workdir):
    """Per-exit GLUE dev accuracy (%), shallow to deep, and the vocab size."""
    config = configuration.load_config(f'{CONFIG}:method={method}')
    config = configuration.apply_overrides(
        config,
        [
            f'data.data_dir={args.data}',
            f'data.tokenizer={tokenizer}',
            f'num_train_steps={args.steps}',
            f'seed={args.seed}',
            f'checkpoint.every_steps={args.steps}',
        ],
    )
    summary = trainer_lib.Trainer(config, workdir).run()
    n = summary['data/num_exits']
    exits = [summary[f'eval/accuracy_exit{i}'] for i in range(n - 1)]
    return [100 * a for a in exits + [summary['eval/accuracy']]], summary[
        'data/vocab_size'
    ]


def text_statistics(args, workdir):
    """OOV share of GLUE dev words (word vocab) and tokens per sentence."""
    config = configuration.load_config(str(CONFIG))
    train, _ = sst2.load_split(args.data, 'train')
    test, _ = sst2.load_split(args.data, 'test')
    words = sst2.build_vocab(train, config.data.vocab_size)
    tokens = [w for s in test for w in s.lower().split()]
    out = {'glue_dev_oov_words': float(np.mean([w not in words for w in tokens]))}
    for kind in TOKENIZERS:  # The trained runs' own tokenizers (workdir).
        encode, _ = sst2.text_encoder(
            kind, train, config.data.vocab_size, 10**4, f'{workdir}/self_distill_{kind}'
        )
        out[f'tokens_per_sentence_{kind}'] = float(
            np.mean((encode(test) != sst2.PAD).sum(axis=1))
        )
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--steps', type=int, default=600)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument(
        '--data_dir',
        '--data',
        dest='data',
        default=str(common.REPO.parent / 'shared/data/sst2'),
    )
    common.add_tag(p)
    args = p.parse_args()
    warmup = configuration.load_config(str(CONFIG)).optimizer.warmup_steps
    if args.steps <= warmup:
        p.error(
            f"--steps {args.steps}: must exceed the config's "
            f'optimizer.warmup_steps ({warmup}); the cosine decay follows it.'
        )
    result = {'steps': args.steps, 'seed': args.seed, 'accuracy': {}, 'vocab': {}}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in TOKENIZERS:
            for method in METHODS:
                acc, vocab = run(method, kind, args, f'{tmp}/{method}_{kind}')
                result['accuracy'][f'{method}_{kind}'] = acc
                result['vocab'][kind] = vocab
        result.update(text_statistics(args, tmp))
    result['plot'] = f'benchmarks/results/{common.stem("sst2_tokenizers", args)}.png'
    plot(result, common.RESULTS / f'{common.stem("sst2_tokenizers", args)}.png')
    common.write_result(common.stem('sst2_tokenizers', args), result)
    print(result)


def plot(result, path):
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for kind, color in zip(TOKENIZERS, ('C0', 'C1')):
        sd = result['accuracy'][f'self_distill_{kind}']
        base = result['accuracy'][f'supervised_{kind}'][-1]
        ax.plot(range(len(sd)), sd, 'o-', color=color, label=f'self-distill, {kind}')
        ax.axhline(base, color=color, ls='--', label=f'baseline, {kind}')
    ax.set_xlabel('exit (shallow to deep)')
    ax.set_ylabel('GLUE dev accuracy (%)')
    ax.set_title(f'SST-2, {result["steps"]} steps, seed {result["seed"]}')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    from jaxdistill import hostmem  # pylint: disable=g-import-not-at-top

    hostmem.reexec_with_huge_pages()
    main()
