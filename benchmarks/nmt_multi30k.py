r"""Multi30k en→de with the tiny Transformer, against the published reference.

    python benchmarks/nmt_multi30k.py [--minutes 60] [--workdir DIR] \
        [--config configs/translate_multi30k.py] [--config.k=v ...]
    python benchmarks/nmt_multi30k.py --quick          # a 2-minute smoke run
    # The committed CPU result: the reference's schedule, 8-bit dropout masks,
    # as many steps as fit (see configs/translate_multi30k.py).
    python benchmarks/nmt_multi30k.py --config configs/translate_multi30k.py:budget
    # GPU: a bigger model and batch, the same script.
    python benchmarks/nmt_multi30k.py --config configs/translate_multi30k.py:size=base \
        --config.data.batch_tokens=16384

Reference (../shared/data/README.md): fairseq transformer_tiny, BLEU4 41.02 on
test2016 en→de, lowercased and Moses-tokenised, after 8k updates of 4,096
tokens, beam 5 and the last 10 checkpoints averaged. (Its training command ran
on two GPUs with --max-tokens 4096 each, so an update held up to 8,192 tokens;
docs/translation.md.)

What it does, all in one process:
 1. Probe: builds the run as `jaxdistill.train` does, measures the float32
    matmul peak with a large `jnp.dot`, and times the compiled train step on a
    full batch of every bucket (in a throwaway `Trainer`). Model FLOPs are
    counted analytically (`flops_per_token`); `fraction_of_peak` is their
    rate over the peak, an epoch's mix of buckets: its total work over its
    total time. It counts every position of each [rows, length] batch, as the
    step computes them, PAD included (about 14% of Multi30k's positions);
    `fraction_of_peak_real_tokens` counts only the real source and target
    tokens (`real_token_flops`). The probe's
    step time (scaled by the training loop's own measured overhead:
    `loop_pace`), compile time and one validation pass set how many steps
    should fit in `--minutes` (capped by `num_train_steps`); that estimate
    spaces the evaluations and checkpoints.
 2. Trains with `Trainer`, evaluating on val (greedy, loss and BLEU) about
    `--curve_points` times for the learning curve. `Trainer.run`'s deadline
    stops it at the last step that fits in the budget (`stopped_by_time_limit`),
    whether the loop runs slower or faster than the estimate, so a run uses
    its whole budget. With a schedule that depends on the total steps
    (cosine, linear) the estimate is the total instead, and the deadline only
    stops a loop slower than planned. `--steps` sets the total and no
    deadline. `train_minutes` is
    the wall time of building the `Trainer` and its `run()`: data loading,
    compilation, checkpoints and those evaluations all count. The probe
    before it has trained the tokenizer and compiled the train step of every
    bucket, which the run reads back from the workdir and the persistent
    compilation cache: that work, `probe_seconds` (its compilation alone
    `probe_compile_seconds`), is not in `train_minutes`.
 3. Chooses on val, with beam search, among the last checkpoint and the means
    of the last 5 and 10 checkpoints, and scores the choice on
    test_2016_flickr: lowercased tokenised BLEU and cased sacreBLEU. With
    `--config.optimizer.ema_decay` the candidates are those of the trained
    parameters and of their moving average (`ema_last_N`), and
    `family_choices` also scores on test what val chooses within each of the
    two: a paired comparison, from one training run.
`--combine` puts several finished runs (seeds) side by side:
    python benchmarks/nmt_multi30k.py --combine nmt_multi30k_seed1,nmt_multi30k_seed2

Writes benchmarks/results/nmt_multi30k.json (`--quick`: nmt_multi30k_quick;
on a GPU nmt_multi30k_gpu, or `--tag`)
and a learning-curve plot (val loss and val BLEU against minutes).
"""

import argparse
import functools
import datetime
import json
import os
import pathlib
import resource
import sys
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position
import train_step_throughput  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxdistill import averaging  # pylint: disable=g-import-not-at-top
from jaxdistill import configuration  # pylint: disable=g-import-not-at-top
from jaxdistill import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
from jaxdistill import optim  # pylint: disable=g-import-not-at-top
from jaxdistill import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
from jaxdistill import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
from jaxdistill.data.tokenizer import PAD_ID  # pylint: disable=g-import-not-at-top
from jaxdistill.models import transformer  # pylint: disable=g-import-not-at-top

REFERENCE_BLEU = 41.02
TEST_SPLIT = 'test_2016_flickr'


def parse_args(argv):
    rest, overrides = configuration.split_overrides(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='configs/translate_multi30k.py')
    parser.add_argument('--minutes', type=float, default=60.0, help='training budget')
    parser.add_argument(
        '--steps',
        type=int,
        default=0,
        help='train exactly this many steps instead of what fits in --minutes '
        '(e.g. the reference 8000 on a GPU, where compilation, not the step, '
        'dominates a short budget)',
    )
    parser.add_argument('--quick', action='store_true', help='2-minute smoke run')
    parser.add_argument(
        '--spread',
        type=int,
        default=0,
        help='no training: for every window of this many consecutive kept '
        'checkpoints of the finished run in --workdir, val and test BLEU of '
        'their mean (how much test moves at equal val); '
        'nmt_multi30k_spread[_TAG].json',
    )
    parser.add_argument(
        '--rescore_upto',
        type=int,
        default=0,
        help='no training: choose on val among the checkpoints of the finished '
        'run in --workdir up to this step (last 1, mean of last 5, 10), as if '
        'it had stopped there, and score test; writes nmt_multi30k_TAG.json',
    )
    parser.add_argument(
        '--probe_only',
        action='store_true',
        help='no training: the speed figures alone (matmul peak, every '
        "bucket's step, fraction of peak over an epoch's mix), as the "
        'benchmark measures them first; nmt_multi30k_probe[_TAG].json',
    )
    parser.add_argument(
        '--combine',
        default='',
        help='no training: comma-separated result names under '
        'benchmarks/results (runs of this script with different --config.seed, '
        'or their --rescore_upto results); their test BLEU side by side, with '
        'mean and spread, in nmt_multi30k_seeds.json and .png',
    )
    parser.add_argument(
        '--refigure',
        default='',
        help='no training: comma-separated result names under '
        'benchmarks/results whose fraction_of_peak and target_tokens_per_s_probe '
        'are recomputed from their own per-bucket records (epoch_rate); the '
        'values they were written with are kept as *_by_batch_count',
    )
    parser.add_argument('--workdir', default='/tmp/jaxdistill_nmt_multi30k')
    parser.add_argument(
        '--data_dir', default=str(common.REPO.parent / 'shared/data/multi30k')
    )
    parser.add_argument(
        '--beam', type=int, default=None, help='final beam (default eval.beam_size)'
    )
    parser.add_argument('--curve_points', type=int, default=10, help='val evals')
    parser.add_argument('--repeats', type=int, default=3, help='timed steps/bucket')
    parser.add_argument(
        '--tag',
        default=None,
        help='result name suffix: results/nmt_multi30k_TAG.json (default: the '
        "JAX backend when it is not 'cpu', e.g. nmt_multi30k_gpu)",
    )
    args = parser.parse_args(rest)
    if args.tag is None and jax.default_backend() != 'cpu':
        args.tag = jax.default_backend()
    if args.quick:
        args.minutes = min(args.minutes, 1.0)
        args.curve_points, args.repeats = 2, 1
        args.config += ',runlocal' if ':' in args.config else ':runlocal'
    return args, overrides


def load_config(args, overrides):
    if not os.path.isdir(args.data_dir):
        raise SystemExit(f'Multi30k folder {args.data_dir} not found; pass --data_dir.')
    config = configuration.load_config(args.config)
    config.data.files_dir = args.data_dir
    config = configuration.apply_overrides(config, overrides)
    config.checkpoint.async_save = False  # Whole steps on disk before averaging.
    return config


def probe(config, workdir, repeats):
    """Matmul peak, per-bucket step timings, compile and eval seconds.

    Uses a throwaway `Trainer` in `workdir` (it leaves the tokenizer behind
    for the real run, and nothing else: it saves no checkpoint).
    """
    # The peak of the dots the model runs: bfloat16 ones with model.dtype.
    dtype = config.model.get('dtype', 'float32')
    peak = train_step_throughput.matmul_peak(dtype=dtype)
    tr = trainer_lib.Trainer(config, workdir)
    batcher = tr.task.train_batches
    buckets = epoch_buckets(batcher)
    rows, compile_s = [], 0.0
    for (b, length), bucket in sorted(buckets.items(), key=lambda kv: kv[0][1]):
        started = time.perf_counter()
        seconds = train_step_throughput.time_step(tr, bucket['example'], repeats)
        compile_s += time.perf_counter() - started - seconds * (repeats + 1)
        flops = transformer.flops_per_token(tr.task.model.config, length, length)
        row = {
            'bucket_length': length,
            'batch_rows': b,
            'batches_per_epoch': bucket['batches'],
            'step_seconds': seconds,
            # The step computes every position of its [rows, length] batch.
            'model_flops_per_s': flops['total'] * b * length / seconds,
        }
        rows.append(row)
        _add_real_token_rates(row, tr.task.model.config, bucket)
    loop = loop_pace(tr, batcher, rows)
    # The better of two readings, one on each side of the step timings.
    peak = max(peak, train_step_throughput.matmul_peak(dtype=dtype))
    for r in rows:
        r['fraction_of_peak'] = r['model_flops_per_s'] / peak
        r['fraction_of_peak_real_tokens'] = r['real_token_flops_per_s'] / peak
    started = time.perf_counter()
    tr.task.evaluate(optim.model_params(tr.state), bleu=True)
    eval_s = time.perf_counter() - started
    tr.close()
    return peak, rows, loop, compile_s, eval_s


def epoch_buckets(batcher) -> dict:
    """{(rows, length): {'batches', 'source_tokens', 'target_tokens',
    'example'}} over epoch 0's batches: how many of each shape, the real
    (non-PAD) tokens they hold in all, and the first one (to time). The
    totals do not depend on the seed: every pair is in one batch an epoch."""
    out = {}
    for i in range(batcher.batches_per_epoch()):
        batch = batcher.batch_at(0, i)
        bucket = out.setdefault(
            batch['inputs'].shape,
            {'batches': 0, 'source_tokens': 0, 'target_tokens': 0, 'example': batch},
        )
        bucket['batches'] += 1
        bucket['source_tokens'] += int((batch['inputs'] != PAD_ID).sum())
        bucket['target_tokens'] += int((batch['targets'] != PAD_ID).sum())
    return out


def real_token_flops(model_config, length: int, source: int, target: int) -> float:
    """Analytic training FLOPs of `source` real source and `target` real
    target tokens in batches of bucket `length` (each token attending over
    the bucket's length, as the step computes it): `flops_per_token`'s
    terms split into those per source token ('source_side') and per target
    token (the rest). PAD
    positions, which the step also computes, are left out."""
    f = transformer.flops_per_token(model_config, length, length)
    # Equal lengths: the source-side terms are per source token.
    return f['source_side'] * source + (f['total'] - f['source_side']) * target


def _add_real_token_rates(row, model_config, bucket) -> None:
    """The bucket's rates counting real tokens only, over the epoch's batches
    of it: target tokens/s and model FLOP/s."""
    seconds = bucket['batches'] * row['step_seconds']
    row['source_tokens_per_epoch'] = bucket['source_tokens']
    row['target_tokens_per_epoch'] = bucket['target_tokens']
    row['target_tokens_per_s'] = bucket['target_tokens'] / seconds
    row['real_token_flops_per_s'] = (
        real_token_flops(
            model_config,
            row['bucket_length'],
            bucket['source_tokens'],
            bucket['target_tokens'],
        )
        / seconds
    )


def loop_pace(tr, batcher, rows, n: int = 40) -> dict:
    """The pace of `n` consecutive steps fed as the trainer feeds them.

    The per-bucket timings above run one batch again and again. The training
    loop also builds each batch on the host and hands it over while earlier
    steps run, on the same two cores; on this project's machine that made its
    steps ~10% slower than the isolated ones (2026-12-05). Returns the loop's
    seconds per step over the first `n` batches of epoch 0, and its ratio to
    the isolated timings of the same buckets (`overhead`, floored at 1).
    """
    isolated = {r['bucket_length']: r['step_seconds'] for r in rows}
    n = min(n, batcher.batches_per_epoch())
    expected = 0.0
    started = time.perf_counter()
    for i in range(n):
        batch = batcher.batch_at(0, i)
        expected += isolated[batch['inputs'].shape[1]]
        arrays = sharding_lib.global_batch(batch, tr.batch_sharding)
        tr.state, aux = tr.step_fn(tr.state, arrays)
    jax.block_until_ready(aux)
    seconds = (time.perf_counter() - started) / n
    return {
        'steps': n,
        'step_seconds': seconds,
        'overhead': max(seconds / (expected / n), 1.0),
    }


def epoch_mean(rows, key):
    """Mean of a per-step quantity (seconds) over an epoch's batches."""
    weights = np.array([r['batches_per_epoch'] for r in rows], float)
    return float(np.average([r[key] for r in rows], weights=weights))


def epoch_rate(rows, key):
    """A rate (FLOP/s, tokens/s, fraction of peak) over an epoch's mix of
    buckets: its total work over its total time, i.e. the buckets' rates
    weighted by the time each takes in an epoch. (Until 2026-12-07 they were
    weighted by batch count, which favoured the fast short buckets: 0.2-0.7
    points of fraction of peak.)"""
    weights = np.array([r['batches_per_epoch'] * r['step_seconds'] for r in rows])
    return float(np.average([r[key] for r in rows], weights=weights))


# Learning-rate schedules that do not depend on num_train_steps.
UNTIMED_SCHEDULES = ('inverse_sqrt', 'constant')


def plan_steps(config, args, rows, loop, compile_s, eval_s):
    """Steps that should fit in the budget (an estimate), and the matching
    eval/checkpoint cadence."""
    step_s = epoch_mean(rows, 'step_seconds') * loop['overhead']
    # Compilation repeats (cheaper, from the persistent cache); evals cost
    # (the probe's untrained model decodes to the length limit: an overestimate).
    # Checkpoints are written synchronously, about 40 of them.
    reserve = 0.5 * compile_s + (args.curve_points + 1) * eval_s + 40 * 0.5
    fit = int(max(args.minutes * 60 - reserve, 0) / step_s)
    steps = args.steps or max(min(config.num_train_steps, fit), 20)
    if args.steps or config.optimizer.schedule not in UNTIMED_SCHEDULES:
        config.num_train_steps = steps
    # Else num_train_steps stays the cap: the deadline decides (main), and
    # a probe that overestimated the step time no longer ends a run early.
    config.eval.every_steps = max(steps // args.curve_points, 1)
    # Ten checkpoints over the last quarter (the reference: last 10 epochs of
    # about 69), so averaging 5 or 10 covers the tail of training.
    config.checkpoint.every_steps = max(steps // 40, 1)
    config.checkpoint.keep = 10
    config.log_every_steps = min(config.log_every_steps, config.checkpoint.every_steps)
    return steps, step_s


def _families(config) -> dict:
    """{prefix: select} of what each candidate averages: the trained
    parameters ('') and, in a run that keeps one (`optimizer.ema_decay`),
    their moving average ('ema_')."""
    raw = functools.partial(optim.model_params, use_ema=False)
    if config.optimizer.get('ema_decay', 0.0) > 0:
        return {'': raw, 'ema_': optim.model_params}
    return {'': raw}


def candidate_params(tr, key, upto=None):
    """(params on the mesh, steps) of candidate `key`, e.g. 'last_10' or
    'ema_last_5': the mean of the last n checkpoints (up to step `upto`)."""
    prefix, n = key.rsplit('last_', 1)
    params, steps = averaging.average_checkpoints(
        tr.ckpt.directory, int(n), upto=upto, select=_families(tr.config)[prefix]
    )
    return jax.device_put(params, sharding_lib.replicated(tr.mesh)), steps


def choose_on_val(tr, args, alpha, upto=None):
    """Val BLEU of the last checkpoint and of the means of the last 5 and 10
    (of those up to step `upto`, default all); with `optimizer.ema_decay`,
    each of the trained parameters and of their moving average."""
    available = len(
        [
            s
            for s in averaging.checkpoint_steps(tr.ckpt.directory)
            if upto is None or s <= upto
        ]
    )
    candidates = {}
    for prefix in _families(tr.config):
        for n in sorted({1, min(5, available), min(10, available)}):
            key = f'{prefix}last_{n}'
            params, steps = candidate_params(tr, key, upto)
            m = tr.task.evaluate(params, beam_size=args.beam, length_penalty=alpha)
            candidates[key] = {
                'steps': steps,
                'val_bleu_tok_lc': float(m['eval/bleu_tok_lc']),
                'val_sacrebleu': float(m['eval/bleu']),
                'val_loss': float(m['eval/loss']),
            }
            print(f'val, {key}: {candidates[key]}')
    best = max(candidates, key=lambda k: candidates[k]['val_bleu_tok_lc'])
    return best, candidates, candidate_params(tr, best, upto)[0]


def family_choices(tr, args, alpha, candidates, choice, test, upto=None) -> dict:
    """With a moving average, the paired comparison: for the trained
    parameters and for their average, the candidate val chooses within that
    family and its test BLEU (the same run, so the same training noise)."""
    families = _families(tr.config)
    if len(families) < 2:
        return {}
    out = {}
    for prefix in families:
        mine = [k for k in candidates if k.rsplit('last_', 1)[0] == prefix]
        key = max(mine, key=lambda k: candidates[k]['val_bleu_tok_lc'])
        if key == choice:
            scored = test
        else:
            params, _ = candidate_params(tr, key, upto)
            scored = tr.task.evaluate(
                params, split=TEST_SPLIT, beam_size=args.beam, length_penalty=alpha
            )
        name = prefix.rstrip('_') or 'params'
        out[name] = {
            'choice': key,
            'val_bleu_tok_lc': candidates[key]['val_bleu_tok_lc'],
            'bleu_tok_lc': float(scored['eval/bleu_tok_lc']),
            'sacrebleu': float(scored['eval/bleu']),
        }
        print(f'chosen on val among the {name}: {out[name]}')
    return out


def test_result(tr, test, args, alpha, choice, candidates, upto=None) -> dict:
    """The fields every scored result shares: test BLEU both ways, the
    decoding settings and the checkpoint chosen on val (and, with a moving
    average, each family's choice: `family_choices`)."""
    return {
        'bleu_tok_lc': test['eval/bleu_tok_lc'],
        'sacrebleu': test['eval/bleu'],
        'sacrebleu_signature': tr.task.bleu_signature,
        'test_split': TEST_SPLIT,
        'test_loss': test['eval/loss'],
        'beam_size': args.beam,
        'length_penalty': alpha,
        'checkpoint_choice': choice,
        'val_candidates': candidates,
        'family_choices': family_choices(
            tr, args, alpha, candidates, choice, test, upto
        ),
    }


def steady_tokens_per_s(workdir):
    """Median of the logged windows' non-padding target tokens per second.

    The first window is left out; the logged rates already leave compilation,
    evaluation and checkpointing out.
    """
    rates = [
        r['train/tokens_per_s']
        for r in metrics_lib.read_metrics(workdir)
        if 'train/tokens_per_s' in r
    ]
    return float(np.median(rates[1:] if len(rates) > 1 else rates))


def curve(workdir, start):
    """Val loss and BLEU records of the run: [{'minutes', 'step', ...}]."""
    points = []
    for r in metrics_lib.read_metrics(workdir):
        if 'eval/loss' in r:
            points.append(
                {
                    'minutes': (r['time'] - start) / 60,
                    'step': r['step'],
                    'val_loss': r['eval/loss'],
                    'val_bleu_tok_lc': r.get('eval/bleu_tok_lc'),
                    'val_sacrebleu': r.get('eval/bleu'),
                }
            )
    return points


def train_tokens(batcher, steps):
    """Non-padding target tokens in the first `steps` batches of training."""
    per_epoch = batcher.batches_per_epoch()
    return int(
        sum(
            (batcher.batch_at(s // per_epoch, s % per_epoch)['targets'] != 0).sum()
            for s in range(steps)
        )
    )


def finished_run(args, config, workdir):
    """A read-only Trainer on the finished run in `workdir`; sets `args.beam`."""
    if not os.path.isfile(os.path.join(workdir, 'summary.json')):
        raise SystemExit(f'{workdir} holds no finished run (no summary.json).')
    jax.config.update('jax_compilation_cache_dir', os.path.join(args.workdir, 'jit'))
    args.beam = args.beam or config.eval.beam_size
    return trainer_lib.Trainer(config, workdir, read_only=True)


def rescore(args, config, workdir):
    """`--rescore_upto`: the finished run in `workdir` as if it stopped at
    that step. Its minutes there are the training loop's (from the run's
    metrics and summary), without building the Trainer (data, tokenizer)."""
    if not args.tag:
        raise SystemExit('--rescore_upto needs a --tag for its result file.')
    tr = finished_run(args, config, workdir)
    upto = args.rescore_upto
    if upto not in tr.ckpt.all_steps():
        raise SystemExit(
            f'No checkpoint for step {upto} in {tr.ckpt.directory}; '
            f'available: {tr.ckpt.all_steps()}'
        )
    with open(os.path.join(workdir, 'summary.json'), encoding='utf-8') as f:
        summary = json.load(f)
    records = metrics_lib.read_metrics(workdir)
    loop_start = records[-1]['time'] - summary['train_seconds']
    at = [r['time'] for r in records if r['step'] == upto]
    alpha = config.eval.length_penalty
    choice, candidates, params = choose_on_val(tr, args, alpha, upto=upto)
    test = tr.task.evaluate(
        params, split=TEST_SPLIT, beam_size=args.beam, length_penalty=alpha
    )
    result = {
        **test_result(tr, test, args, alpha, choice, candidates, upto),
        'rescored_upto_step': upto,
        'run_steps': summary['step'],
        'loop_minutes_at_step': (min(at) - loop_start) / 60 if at else None,
        'run_loop_minutes': summary['train_seconds'] / 60,
        'workdir': workdir,
    }
    common.write_result(f'nmt_multi30k_{args.tag}', result)
    print(
        f'up to step {upto}: test2016 BLEU tok/lc {result["bleu_tok_lc"]:.2f},'
        f' sacreBLEU {result["sacrebleu"]:.2f} ({choice})'
    )


def spread(args, config, workdir):
    """`--spread N`: val and test BLEU of the mean of every N consecutive kept
    checkpoints. Not a choice of checkpoint (test is never used to choose):
    it measures how far test BLEU moves between windows whose val BLEU
    hardly differs."""
    tr = finished_run(args, config, workdir)
    alpha = config.eval.length_penalty
    replicated = sharding_lib.replicated(tr.mesh)
    kept = tr.ckpt.all_steps()
    if not 1 <= args.spread <= len(kept):
        raise SystemExit(
            f'--spread {args.spread}: the run in {workdir} kept {len(kept)} '
            f'checkpoints ({kept}); pass a window of 1 to {len(kept)}.'
        )
    windows = []
    for upto in kept[args.spread - 1 :]:
        params, steps = averaging.average_checkpoints(
            tr.ckpt.directory, args.spread, upto=upto
        )
        params = jax.device_put(params, replicated)
        row = {'steps': steps}
        for name, split in (('val', None), ('test', TEST_SPLIT)):
            m = tr.task.evaluate(
                params, split=split, beam_size=args.beam, length_penalty=alpha
            )
            row[f'{name}_bleu_tok_lc'] = float(m['eval/bleu_tok_lc'])
        print(row, flush=True)
        windows.append(row)
    stats = {}
    for name in ('val', 'test'):
        bleu = np.array([w[f'{name}_bleu_tok_lc'] for w in windows])
        stats[name] = {
            'mean': float(bleu.mean()),
            'std': float(bleu.std(ddof=1)) if len(bleu) > 1 else None,
            'range': float(np.ptp(bleu)),
        }
    name = 'nmt_multi30k_spread' + (f'_{args.tag}' if args.tag else '')
    name += '_quick' if args.quick else ''  # Git-ignored, marked a smoke run.
    plot = common.RESULTS / f'{name}.png'
    _plot_spread(windows, plot)
    common.write_result(
        name,
        {
            'plot': str(plot.relative_to(common.REPO)),
            'window': args.spread,
            'windows': windows,
            **{f'{k}_bleu_tok_lc': v for k, v in stats.items()},
            'beam_size': args.beam,
            'length_penalty': alpha,
            'workdir': workdir,
        },
    )
    print(f'val {stats["val"]}; test {stats["test"]}')


def _plot_spread(windows, path):
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    fig, ax = plt.subplots(figsize=(6, 3.5))
    last = [w['steps'][-1] for w in windows]
    for name, style in (('val', 'o-'), ('test', 's-')):
        ax.plot(last, [w[f'{name}_bleu_tok_lc'] for w in windows], style, label=name)
    ax.axhline(REFERENCE_BLEU, color='k', ls='--', lw=0.8, label='reference (test)')
    ax.set_xlabel(f'last step of the {len(windows[0]["steps"])} averaged checkpoints')
    ax.set_ylabel('BLEU (tokenised, lowercased), beam')
    ax.set_title('Multi30k en→de: val and test BLEU of checkpoint windows')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _run_record(name: str, budget_minutes: float) -> dict:
    """One result of this script, reduced to what `--combine` compares."""
    path = common.RESULTS / f'{name}.json'
    try:
        r = json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f'--combine: no result {path}') from None
    except json.JSONDecodeError as e:
        raise SystemExit(f'--combine: {path} is not JSON: {e}') from None
    if 'bleu_tok_lc' not in r:
        raise SystemExit(f'--combine: {path} has no bleu_tok_lc (not a run result)')
    if 'rescored_upto_step' in r:
        # A run scored as of an earlier checkpoint: its clock there is the
        # training loop's (the loop starts at Trainer construction, as for
        # a run's own `train_minutes`), and its config is in its workdir.
        minutes = r['loop_minutes_at_step']
        config_path = os.path.join(r['workdir'], 'config.json')
        seed = None
        if os.path.isfile(config_path):
            with open(config_path, encoding='utf-8') as f:
                seed = json.load(f).get('seed')
        how = f'rescored as of step {r["rescored_upto_step"]} of {r["run_steps"]}'
        steps = r['rescored_upto_step']
    else:
        minutes = r['train_minutes']
        seed = r.get('config', {}).get('seed')
        how = 'stopped by the deadline' if r.get('stopped_by_time_limit') else 'run'
        steps = r['train_steps']
    return {
        'result': name,
        'seed': seed,
        'bleu_tok_lc': r['bleu_tok_lc'],
        'sacrebleu': r['sacrebleu'],
        'val_bleu_tok_lc': r['val_candidates'][r['checkpoint_choice']][
            'val_bleu_tok_lc'
        ],
        'checkpoint_choice': r['checkpoint_choice'],
        'train_steps': steps,
        'train_minutes': minutes,
        'within_budget': minutes is not None and minutes <= budget_minutes,
        'how': how,
        'date': r.get('date'),
    }


def combine(args):
    """`--combine A,B,...`: several finished runs' test BLEU, with mean and
    spread (one run cannot settle a target its own checkpoints' test BLEU
    varies around by about a point: docs/translation.md)."""
    names = [n.strip() for n in args.combine.split(',') if n.strip()]
    if len(names) < 2:
        raise SystemExit('--combine needs at least two result names, comma-separated.')
    runs = [_run_record(n, args.minutes) for n in names]
    seeds = [r['seed'] for r in runs]
    if None not in seeds and len(set(seeds)) < len(seeds):
        raise SystemExit(f'--combine: runs share a seed ({seeds}); pass distinct runs.')
    stats = {}
    for key in ('bleu_tok_lc', 'sacrebleu', 'val_bleu_tok_lc'):
        v = np.array([r[key] for r in runs])
        stats[key] = {
            'mean': float(v.mean()),
            'std': float(v.std(ddof=1)),
            'min': float(v.min()),
            'max': float(v.max()),
        }
    mean = stats['bleu_tok_lc']['mean']
    plot = common.RESULTS / 'nmt_multi30k_seeds.png'
    _plot_seeds(runs, stats, plot)
    common.write_result(
        'nmt_multi30k_seeds',
        {
            'runs': runs,
            **{f'{k}_over_runs': v for k, v in stats.items()},
            'reference_bleu_tok_lc': REFERENCE_BLEU,
            'budget_minutes': args.minutes,
            'targets_met': {
                'quality_mean': mean >= 41.0 and all(r['within_budget'] for r in runs)
            },
            'plot': str(plot.relative_to(common.REPO)),
        },
    )
    for r in runs:
        print(
            f'{r["result"]} (seed {r["seed"]}, {r["how"]}): test {r["bleu_tok_lc"]:.2f}'
            f' val {r["val_bleu_tok_lc"]:.2f}, {r["train_minutes"]:.1f} min'
        )
    s = stats['bleu_tok_lc']
    print(
        f'test2016 BLEU tok/lc over {len(runs)} runs: mean {s["mean"]:.2f}, '
        f'std {s["std"]:.2f}, range {s["min"]:.2f}-{s["max"]:.2f} '
        f'(reference {REFERENCE_BLEU})'
    )


def _plot_seeds(runs, stats, path):
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(runs))
    for key, style, label in (
        ('val_bleu_tok_lc', 'o', 'val (chosen checkpoints)'),
        ('bleu_tok_lc', 's', 'test2016'),
    ):
        ax.plot(x, [r[key] for r in runs], style, label=label)
        ax.axhline(stats[key]['mean'], color=ax.lines[-1].get_color(), lw=0.8)
    ax.axhline(REFERENCE_BLEU, color='k', ls='--', lw=0.8, label='reference (test)')
    ax.set_xticks(x, [f'seed {r["seed"]}' for r in runs])
    ax.set_ylabel('BLEU (tokenised, lowercased), beam')
    ax.set_title('Multi30k en→de, tiny, 60 CPU minutes: runs and their means')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def probe_only(args, config, workdir):
    """`--probe_only`: the probe's speed figures, without training."""
    config.eval.beam_size = 0  # The probe's one evaluation: greedy, as in a run.
    peak, rows, loop, _, _ = probe(config, workdir, args.repeats)
    name = 'nmt_multi30k_probe' + (f'_{args.tag}' if args.tag else '')
    name += '_quick' if args.quick else ''  # Git-ignored, marked a smoke run.
    result = {
        'fraction_of_peak': epoch_rate(rows, 'fraction_of_peak'),
        'fraction_of_peak_real_tokens': epoch_rate(
            rows, 'fraction_of_peak_real_tokens'
        ),
        'target_tokens_per_s_probe': epoch_rate(rows, 'target_tokens_per_s'),
        'matmul_peak_flops_per_s': peak,
        'matmul_peak_dtype': config.model.get('dtype', 'float32'),
        'repeats': args.repeats,
        'buckets': rows,
        'loop_pace': loop,
        'config': json.loads(configuration.to_json(config)),
    }
    common.write_result(name, result)
    for r in rows:
        print(
            f'L={r["bucket_length"]:3d} B={r["batch_rows"]:4d} '
            f'{r["step_seconds"] * 1e3:7.1f} ms/step '
            f'{100 * r["fraction_of_peak"]:5.1f}% of peak'
        )
    print(
        f"peak {peak / 1e9:.1f} GFLOP/s; fraction of peak over an epoch's mix "
        f'{result["fraction_of_peak"]:.3f} (real tokens only: '
        f'{result["fraction_of_peak_real_tokens"]:.3f})'
    )


def recount_real_tokens(result, name: str, data_dir: str) -> None:
    """Adds the real-token rates (`_add_real_token_rates`) to the buckets of
    an earlier result that predates them, from its own step timings and the
    epoch's real tokens, counted again from its config and data. The batch
    shapes and counts found must be the result's own (same data, tokenizer
    and batching), or nothing is changed."""
    import tempfile  # pylint: disable=g-import-not-at-top

    import ml_collections  # pylint: disable=g-import-not-at-top

    from jaxdistill.tasks import translation  # pylint: disable=g-import-not-at-top

    config = ml_collections.ConfigDict(result['config'])
    config.data.files_dir = data_dir
    rows = result['buckets']
    devices = len(result.get('machine', {}).get('devices', [])) or 1
    mesh = sharding_lib.make_mesh(1, jax.devices()[:devices])
    with tempfile.TemporaryDirectory() as tmp:
        task = translation.TranslationTask(config, tmp, mesh)
        buckets = epoch_buckets(task.train_batches)
    found = {k: v['batches'] for k, v in buckets.items()}
    recorded = {
        (r['batch_rows'], r['bucket_length']): r['batches_per_epoch'] for r in rows
    }
    if found != recorded:
        raise SystemExit(
            f'{name}: the batches rebuilt from its config, {sorted(found.items())}, '
            f'are not its own, {sorted(recorded.items())}; not recounted.'
        )
    model_config = translation.build_model(
        config.model, task.tokenizer.vocab_size
    ).config
    peak = result['matmul_peak_flops_per_s']
    for r in rows:
        r.setdefault('target_tokens_per_s_first_batch', r['target_tokens_per_s'])
        _add_real_token_rates(
            r, model_config, buckets[(r['batch_rows'], r['bucket_length'])]
        )
        r['fraction_of_peak_real_tokens'] = r['real_token_flops_per_s'] / peak


def refigure(args):
    """Rates of earlier results recomputed from their bucket records by the
    current `epoch_rate` (before 2026-12-07 the script averaged the buckets'
    rates by batch count), and the real-token rates added where missing
    (`recount_real_tokens`). Rewrites each file in place."""
    for name in [n.strip() for n in args.refigure.split(',') if n.strip()]:
        path = common.RESULTS / f'{name}.json'
        text = path.read_text()
        result = json.loads(text)
        rows = result.get('buckets')
        if not rows:
            raise SystemExit(f'{path} has no per-bucket records to recompute from.')
        if 'fraction_of_peak_real_tokens' not in rows[0]:
            recount_real_tokens(result, name, args.data_dir)
            result['fraction_of_peak_real_tokens'] = epoch_rate(
                rows, 'fraction_of_peak_real_tokens'
            )
            result['target_tokens_per_s_probe_first_batch'] = result.get(
                'target_tokens_per_s_probe'
            )
            result['real_tokens_recounted'] = (
                f"{datetime.date.today().isoformat()}: each bucket's real "
                '(non-PAD) source and target tokens over an epoch counted again '
                "from this file's config and data (the batch shapes and counts "
                'match its own), giving fraction_of_peak_real_tokens and the '
                "buckets' target_tokens_per_s over all their batches (the run "
                'had counted the first batch of each shape: '
                '*_first_batch), by `python benchmarks/nmt_multi30k.py '
                f'--refigure {name}`.'
            )
        for key, rate in (
            ('fraction_of_peak', 'fraction_of_peak'),
            ('target_tokens_per_s_probe', 'target_tokens_per_s'),
        ):
            if key in result:
                result.setdefault(f'{key}_by_batch_count', result[key])
                result[key] = epoch_rate(rows, rate)
        if (
            isinstance(result.get('targets_met'), dict)
            and 'speed' in result['targets_met']
        ):
            result['targets_met']['speed'] = result['fraction_of_peak'] >= 0.5
            result['targets_met']['speed_real_tokens'] = (
                result['fraction_of_peak_real_tokens'] >= 0.5
            )
        result['refigured'] = (
            f'{datetime.date.today().isoformat()}: fraction_of_peak and target_tokens_per_s_probe recomputed from this '
            "file's own buckets as an epoch's total work over its total time "
            f'(epoch_rate), by `python benchmarks/nmt_multi30k.py --refigure {name}`; '
            "the run had written the batch-count-weighted mean of the buckets' "
            'rates, kept as *_by_batch_count.'
        )
        indent = 2 if '\n  "' in text else None
        path.write_text(
            json.dumps(result, indent=indent) + ('\n' if text.endswith('\n') else '')
        )
        print(
            f'{path}: fraction_of_peak {result["fraction_of_peak"]:.4f} '
            f'(by batch count {result["fraction_of_peak_by_batch_count"]:.4f})'
        )


def main():
    args, overrides = parse_args(sys.argv[1:])
    if args.combine:
        return combine(args)
    if args.refigure:
        return refigure(args)
    config = load_config(args, overrides)
    workdir = os.path.join(args.workdir, 'run')
    if args.rescore_upto:
        return rescore(args, config, workdir)
    if args.spread:
        return spread(args, config, workdir)
    ckpts = os.path.join(workdir, 'checkpoints')
    if os.path.isdir(ckpts) and averaging.checkpoint_steps(ckpts):
        raise SystemExit(f'{workdir} holds an earlier run; pass a fresh --workdir.')
    jax.config.update('jax_compilation_cache_dir', os.path.join(args.workdir, 'jit'))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
    if args.probe_only:
        return probe_only(args, config, workdir)
    if args.beam is None:
        args.beam = config.eval.beam_size
    config.eval.beam_size = 0  # Greedy for the curve; a beam for the choice.
    probe_started = time.time()
    peak, rows, loop, compile_s, eval_s = probe(config, workdir, args.repeats)
    probe_s = time.time() - probe_started
    steps, step_s = plan_steps(config, args, rows, loop, compile_s, eval_s)
    print(
        f'peak {peak / 1e9:.1f} GFLOP/s; {step_s:.3f} s/step (loop overhead '
        f'{loop["overhead"]:.2f}x); compile {compile_s:.0f}s;'
        f' eval {eval_s:.0f}s -> {steps} steps in {args.minutes} min'
    )
    start = time.time()  # Data, tokenizer (cached) and compilation count.
    tr = trainer_lib.Trainer(config, workdir)
    # The plan is an estimate; the deadline holds the budget if the loop runs
    # slower than the probe's steps (the final evaluation after it counts).
    deadline = None if args.steps else start + args.minutes * 60 - eval_s - 10
    summary = tr.run(deadline=deadline)
    planned, steps = steps, summary['step']
    train_s = time.time() - start
    alpha = config.eval.length_penalty
    choice, candidates, params = choose_on_val(tr, args, alpha)
    test = tr.task.evaluate(
        params, split=TEST_SPLIT, beam_size=args.beam, length_penalty=alpha
    )
    with open(os.path.join(workdir, 'test_hypotheses.de'), 'w', encoding='utf-8') as f:
        f.writelines(h + '\n' for h in tr.task.last_hypotheses)
    points = curve(workdir, start)
    tokens = train_tokens(tr.task.train_batches, steps)
    name = 'nmt_multi30k' + (f'_{args.tag}' if args.tag else '')
    name += '_quick' if args.quick else ''
    plot = common.RESULTS / f'{name}.png'
    m = config.model
    title = (
        f'Transformer {m.num_encoder_layers}+{m.num_decoder_layers} layers, '
        f'd_model {m.d_model} ({jax.default_backend()}), Multi30k en→de'
    )
    _plot(points, test, plot, title)
    fraction = epoch_rate(rows, 'fraction_of_peak')
    fraction_real = epoch_rate(rows, 'fraction_of_peak_real_tokens')
    result = {
        **test_result(tr, test, args, alpha, choice, candidates),
        'train_minutes': train_s / 60,
        'probe_seconds': probe_s,
        'probe_compile_seconds': compile_s,
        'fraction_of_peak': fraction,
        'fraction_of_peak_real_tokens': fraction_real,
        'target_tokens_per_s': tokens / train_s,
        'target_tokens_per_s_steady': steady_tokens_per_s(workdir),
        'target_tokens_per_s_probe': epoch_rate(rows, 'target_tokens_per_s'),
        'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        'reference': {
            'bleu_tok_lc': REFERENCE_BLEU,
            'what': 'fairseq transformer_tiny, 8k updates of 4,096 tokens per GPU '
            'on 2 GPUs, '
            'beam 5, last 10 checkpoints averaged (Wu et al., ACL 2021)',
        },
        'targets_met': {
            'quality': test['eval/bleu_tok_lc'] >= 41.0 and train_s <= 3600,
            # Every position the step computes (the full batch)...
            'speed': fraction >= 0.5,
            # ... and only the real tokens among them.
            'speed_real_tokens': fraction_real >= 0.5,
        },
        'train_steps': steps,
        'planned_steps': planned,
        'stopped_by_time_limit': summary['stopped_by_time_limit'],
        'budget_minutes': args.minutes,
        'train_target_tokens': tokens,
        'matmul_peak_flops_per_s': peak,
        'matmul_peak_dtype': config.model.get('dtype', 'float32'),
        'buckets': rows,
        'loop_pace': loop,
        'learning_curve': points,
        'num_params': summary.get('num_params'),
        'config': json.loads(configuration.to_json(config)),
        'workdir': workdir,
        'plot': str(plot.relative_to(common.REPO)),
    }
    common.write_result(name, result)
    print(
        f'test2016 BLEU tok/lc {result["bleu_tok_lc"]:.2f} (reference {REFERENCE_BLEU}),'
        f' sacreBLEU {result["sacrebleu"]:.2f}; {result["train_minutes"]:.1f} min;'
        f' {result["fraction_of_peak"]:.2f} of peak;'
        f' {result["target_tokens_per_s"]:,.0f} target tok/s;'
        f' peak RSS {result["peak_rss_mb"]:,.0f} MB'
    )


def _plot(points, test, path, title):
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    minutes = [p['minutes'] for p in points]
    ax1.plot(minutes, [p['val_loss'] for p in points], 'o-')
    ax1.set_xlabel('training minutes')
    ax1.set_ylabel('val loss (nats/token)')
    ax2.plot(minutes, [p['val_bleu_tok_lc'] for p in points], 'o-', label='val, greedy')
    ax2.axhline(REFERENCE_BLEU, color='gray', ls='--', label='reference (test)')
    if minutes:
        ax2.plot(
            [minutes[-1]],
            [test['eval/bleu_tok_lc']],
            'r*',
            ms=12,
            label='test, beam + choice',
        )
    ax2.set_xlabel('training minutes')
    ax2.set_ylabel('BLEU (tokenised, lowercased)')
    ax2.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    from jaxdistill import hostmem  # pylint: disable=g-import-not-at-top

    hostmem.reexec_with_huge_pages()
    main()
