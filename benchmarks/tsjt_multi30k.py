"""TSJT on one-to-many Multi30k (en→de, fr, cs) against solo training and distillation.

    python benchmarks/tsjt_multi30k.py [--steps 8000] [--size tiny] [--workdir DIR]
    python benchmarks/tsjt_multi30k.py --quick            # a few-minute smoke run
    # GPU: bigger models and batches, the same script.
    python benchmarks/tsjt_multi30k.py --size base --batch_tokens 16384 --steps 20000

Every arm trains on the same data (one joint SentencePiece vocabulary, the
target-language tag first on the source) for the same number of steps:

  small_solo       the small model alone (`--size`, e.g. tiny: 4+4 layers,
                   d 128, 4 heads, FFN 256);
  large_solo       the wide large model alone: twice the heads (same head
                   width) and FFN units, the large model of composite A;
  large_deep_solo  the deep large model alone: twice the layers, the large
                   model of composite B;
  small_kd         classic distillation: the small model distilled from the
                   finished large_solo (alpha 0.5, T 1), after it;
  tsjt_a           TSJT, composite A (nested width, capacities x0.5 = small
                   and x1 = wide large);
  tsjt_b           TSJT, composite B (stacked depth, x0.5 = the bottom half
                   of the deep large = small's shape plus its own norms).

Each arm evaluates on val (greedy, `--eval_examples` shared by the three
directions) `--curve_points` times; at the end every model is scored on
test_2016_flickr (beam `--beam`) per direction, with lowercased tokenised
BLEU (the Multi30k literature's) and cased sacreBLEU. Wall times are of
building the `Trainer` and its `run()`, minus its evaluations. Then TSJT-A's small capacity is
extracted with `jaxdistill.extract`, evaluated on test by the
`jaxdistill.evaluate` CLI, and its decoding time compared with the large's.

Writes benchmarks/results/tsjt_multi30k.json (`--quick`: tsjt_multi30k_quick)
and a plot of val BLEU against step for every capacity and arm.
"""

import argparse
import functools
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxdistill import configuration  # pylint: disable=g-import-not-at-top
from jaxdistill import extract as extract_lib  # pylint: disable=g-import-not-at-top
from jaxdistill import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
from jaxdistill import optim  # pylint: disable=g-import-not-at-top
from jaxdistill import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
from jaxdistill import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
from jaxdistill.models import transformer  # pylint: disable=g-import-not-at-top
from jaxdistill.tasks import translation  # pylint: disable=g-import-not-at-top

ARMS = ('small_solo', 'large_solo', 'large_deep_solo', 'small_kd', 'tsjt_a', 'tsjt_b')
LANGS = ('de', 'fr', 'cs')
TEST_SPLIT = 'test_2016_flickr'


def parse_args(argv):
    rest, overrides = configuration.split_overrides(argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--steps', type=int, default=8000, help='training steps per arm')
    p.add_argument('--size', default='tiny', help='the small model (SIZES name)')
    p.add_argument('--batch_tokens', type=int, default=4096)
    p.add_argument('--vocab_size', type=int, default=10000)
    p.add_argument('--stage2_fraction', type=float, default=0.5)
    p.add_argument('--curve_points', type=int, default=8)
    p.add_argument('--eval_examples', type=int, default=300, help='val, all directions')
    p.add_argument('--beam', type=int, default=5, help='test decoding beam')
    p.add_argument('--arms', default=','.join(ARMS))
    p.add_argument(
        '--timing_steps',
        type=int,
        default=30,
        help='after the arms, time this many steps of each arm alone, one '
        'after another (0: off); the wall ratio is taken from these',
    )
    p.add_argument('--quick', action='store_true', help='smoke run: tiny everything')
    p.add_argument(
        '--resume',
        action='store_true',
        help='keep the arms already recorded in WORKDIR/results_partial.json '
        '(same settings) and run only the others',
    )
    p.add_argument(
        '--rescore',
        action='store_true',
        help='with --resume: score the recorded arms again on the test set '
        "from their workdirs' last checkpoints (same settings), e.g. after a "
        'change to the scoring',
    )
    p.add_argument('--workdir', default='/tmp/jaxdistill_tsjt_multi30k')
    p.add_argument(
        '--data_dir', default=str(common.REPO.parent / 'shared/data/multi30k')
    )
    args = p.parse_args(rest)
    if args.rescore and not args.resume:
        p.error('--rescore needs --resume (it rescores the recorded arms)')
    if args.quick:
        args.steps, args.curve_points, args.eval_examples, args.beam = 30, 2, 30, 2
        args.batch_tokens, args.vocab_size = 512, 400
    return args, overrides


def _models(size):
    """(small, wide, deep) model fields from a named size."""
    small = dict(transformer.SIZES[size])
    head = small['d_model'] // small['num_heads']
    wide = dict(small, num_heads=2 * small['num_heads'], d_ff=2 * small['d_ff'])
    wide['head_size'] = head
    deep = dict(
        small,
        num_encoder_layers=2 * small['num_encoder_layers'],
        num_decoder_layers=2 * small['num_decoder_layers'],
    )
    return small, wide, deep


def arm_config(arm, args, overrides, root):
    config = configuration.load_config(
        'configs/tsjt_multi30k.py' + (':runlocal' if args.quick else '')
    )
    config.data.files_dir = args.data_dir
    config.data.vocab_size = args.vocab_size
    config.data.batch_tokens = args.batch_tokens
    config.num_train_steps = args.steps
    config.log_every_steps = max(min(50, args.steps // 10), 1)
    config.eval.every_steps = max(args.steps // args.curve_points, 1)
    config.eval.max_examples = args.eval_examples
    config.eval.beam_size = 0
    config.checkpoint.every_steps = max(args.steps // 4, 1)
    config.checkpoint.keep = 1
    config.checkpoint.async_save = False
    small, wide, deep = _models('tiny' if args.quick else args.size)
    if args.quick:  # Shrink each model to 1 layer a side, d_model 32.
        for m in (small, wide, deep):
            n = 1 if m is not deep else 2
            m.update(num_encoder_layers=n, num_decoder_layers=n, d_model=32)
            m['d_ff'] //= 4
        wide['head_size'] = 8
    model = {
        'small_solo': small,
        'small_kd': small,
        'large_solo': wide,
        'large_deep_solo': deep,
        'tsjt_a': wide,
        'tsjt_b': deep,
    }[arm]
    config.model.update(model)
    if 'head_size' not in model:
        config.model.head_size = 0
    smoothing = config.method.label_smoothing
    config.model.composite.kind = ''
    if arm.startswith('tsjt'):
        config.model.composite.kind = 'width' if arm == 'tsjt_a' else 'depth'
        config.model.composite.fractions = (0.5, 1.0)
        config.method.stage2_start = int(args.steps * args.stage2_fraction)
    elif arm == 'small_kd':
        config.method = ml_collections.ConfigDict(
            {
                'name': 'distill',
                'teacher_workdir': os.path.join(root, 'large_solo'),
                'alpha': 0.5,
                'temperature': 1.0,
                'label_smoothing': smoothing,
            }
        )
    else:
        config.method = ml_collections.ConfigDict(
            {'name': 'supervised', 'label_smoothing': smoothing}
        )
    return configuration.apply_overrides(config, overrides)


def eval_seconds(workdir):
    return sum(r.get('eval/seconds', 0.0) for r in metrics_lib.read_metrics(workdir))


def curves(workdir, names):
    """{capacity: [(step, val BLEU tok/lc mean over directions)]}."""
    out = {n: [] for n in names}
    for r in metrics_lib.read_metrics(workdir):
        for n in names:
            prefix = 'eval/' if len(names) == 1 else f'eval/{n}/'
            keys = [f'{prefix}bleu_tok_lc_{l}' for l in LANGS]
            if all(k in r for k in keys):
                out[n].append((r['step'], float(np.mean([r[k] for k in keys]))))
    return out


def test_scores(tr, params, beam):
    """Scores on the whole test set (eval.max_examples trims val only)."""
    m = tr.task.evaluate(params, split=TEST_SPLIT, beam_size=beam)
    per = {l: float(m[f'eval/bleu_tok_lc_{l}']) for l in LANGS}
    sacre = {l: float(m[f'eval/bleu_{l}']) for l in LANGS}
    return {
        'bleu_tok_lc': float(np.mean(list(per.values()))),
        'sacrebleu': float(np.mean(list(sacre.values()))),
        'per_direction_tok_lc': per,
        'per_direction_sacrebleu': sacre,
        'test_loss': float(m['eval/loss']),
    }


def run_arm(arm, args, overrides, root):
    workdir = os.path.join(root, arm)
    if os.path.exists(os.path.join(workdir, 'summary.json')):
        raise SystemExit(f'{workdir} holds a finished run; pass a fresh --workdir.')
    os.makedirs(workdir, exist_ok=True)
    spm = os.path.join(root, 'spm.model')
    if os.path.exists(spm):  # One vocabulary for every arm (distillation needs it).
        shutil.copy(spm, os.path.join(workdir, 'spm.model'))
    config = arm_config(arm, args, overrides, root)
    print(f'=== {arm}: {config.method.name}, model {dict(config.model)}', flush=True)
    started = time.time()
    tr = trainer_lib.Trainer(config, workdir)
    tr.run()
    wall = time.time() - started
    if not os.path.exists(spm):
        shutil.copy(os.path.join(workdir, 'spm.model'), spm)
    models = tr.method.eval_models(optim.model_params(tr.state), tr.state.extra)
    names = list(models)
    result = {
        'method': config.method.name,
        'wall_seconds': wall,
        'eval_seconds': eval_seconds(workdir),
        'train_seconds': wall - eval_seconds(workdir),
        'num_params': {n: transformer.count_params(p) for n, p in models.items()},
        'val_curve': curves(workdir, names),
        'test': {},
        'workdir': workdir,
        'load_average': os.getloadavg()[0],
    }
    for n, p in models.items():
        result['test'][n] = test_scores(tr, p, args.beam)
        print(f'{arm} {n}: test {result["test"][n]}', flush=True)
    return result, tr


def rescore_arm(arm, args, overrides, root, workdir):
    """Test scores of every capacity of a finished arm, from its last checkpoint."""
    config = arm_config(arm, args, overrides, root)
    tr = trainer_lib.Trainer(config, workdir, read_only=True)
    models = tr.method.eval_models(optim.model_params(tr.state), tr.state.extra)
    test = {}
    for n, p in models.items():
        test[n] = test_scores(tr, p, args.beam)
        print(f'{arm} {n}: rescored test {test[n]}', flush=True)
    return test


def isolated_step_seconds(arm, args, overrides, root):
    """Seconds per train step of one arm with the machine to itself.

    The arm's first `--timing_steps` batches (TSJT: half of them in each
    stage) run through its compiled step twice; the first pass compiles every
    batch shape and phase, the second is timed.
    """
    workdir = os.path.join(root, 'timing', arm)
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    shutil.copy(os.path.join(root, 'spm.model'), os.path.join(workdir, 'spm.model'))
    config = arm_config(arm, args, overrides, root)
    steps = args.timing_steps
    if arm.startswith('tsjt'):
        config.method.stage2_start = steps // 2
    tr = trainer_lib.Trainer(config, workdir)
    batches = [
        sharding_lib.global_batch(next(tr.task.train_batches), tr.batch_sharding)
        for _ in range(steps)
    ]
    phases = [tr.method.phase(i) for i in range(steps)]

    def sweep(state):
        for batch, phase in zip(batches, phases):
            state, aux = tr.step_fn(state, batch, phase)
        return jax.block_until_ready((state, aux))[0]

    state = sweep(tr.state)
    started = time.perf_counter()
    sweep(state)
    return (time.perf_counter() - started) / steps


def extraction(root, args, tr):
    """Extracts TSJT-A's small capacity; CLI evaluation and decoding time."""
    out = os.path.join(root, 'tsjt_a_small_extracted')
    shutil.rmtree(out, ignore_errors=True)
    info = extract_lib.extract(os.path.join(root, 'tsjt_a'), 'x0.5', out)
    cmd = [
        sys.executable,
        '-m',
        'jaxdistill.evaluate',
        '--workdir',
        out,
        f'--config.data.eval_split={TEST_SPLIT}',
        f'--config.eval.beam_size={args.beam}',
        '--config.eval.max_examples=0',
        f'--config.data.files_dir={args.data_dir}',
    ]
    proc = subprocess.run(
        cmd, check=False, cwd=common.REPO, capture_output=True, text=True
    )
    if proc.returncode:
        raise SystemExit(f'evaluate CLI failed: {proc.stderr[-2000:]}')
    start = proc.stdout.rindex('{\n  "')
    cli = json.loads(proc.stdout[start : proc.stdout.index('\n}', start) + 2])
    # Decoding time on the test sources (en, one direction's tag), each model.
    data = translation.data_lib.load_translation(tr.config.data, TEST_SPLIT)
    texts = [s for s, l in zip(data.source, data.target_lang) if l == 'de']
    models = tr.method.eval_models(optim.model_params(tr.state), tr.state.extra)
    seconds = {}
    for name, params in models.items():
        model = translation.transformer_lib.Transformer(
            translation.transformer_lib.infer_config(params, tr.task.model.config)
        )
        decode = functools.partial(
            translation.translate_texts,
            model,
            params,
            tr.task.tokenizer,
            texts,
            data_cfg=tr.config.data,
            beam_size=args.beam,
            max_len=tr.config.eval.max_decode_len,
            target_lang='de',
        )
        decode()  # Compile.
        started = time.perf_counter()
        decode()
        seconds[name] = time.perf_counter() - started
    return {
        'extracted': info,
        'cli_command': shlex.join(cmd[1:]),
        'cli_test_bleu_tok_lc': cli.get('eval/bleu_tok_lc'),
        'cli_test_bleu_tok_lc_per_direction': {
            l: cli.get(f'eval/bleu_tok_lc_{l}') for l in LANGS
        },
        'decode_seconds_en_de_test': seconds,
        'decode_speedup_small_vs_large': seconds['x1'] / seconds['x0.5'],
    }


def main():
    args, overrides = parse_args(sys.argv[1:])
    if not os.path.isdir(args.data_dir):
        raise SystemExit(f'Multi30k folder {args.data_dir} not found; pass --data_dir.')
    arms = [a for a in args.arms.split(',') if a]
    if 'small_kd' in arms and 'large_solo' in arms:
        arms.remove('small_kd')
        arms.insert(arms.index('large_solo') + 1, 'small_kd')
    root = args.workdir
    os.makedirs(root, exist_ok=True)
    jax.config.update('jax_compilation_cache_dir', os.path.join(root, 'jit'))
    partial = pathlib.Path(root) / 'results_partial.json'
    results, resumed = {}, []
    if args.resume and partial.exists():
        results = json.loads(partial.read_text())
        resumed = list(results)
        print(f'resuming: arms already done: {", ".join(results)}', flush=True)
    if args.rescore:
        for arm in results:
            results[arm]['test'] = rescore_arm(
                arm, args, overrides, root, results[arm]['workdir']
            )
            results[arm]['rescored'] = time.strftime(
                '%Y-%m-%d %H:%M UTC', time.gmtime()
            )
        partial.write_text(json.dumps(results, indent=2) + '\n')
    for arm in arms:
        if arm in results:
            continue
        results[arm], _ = run_arm(arm, args, overrides, root)
        partial.write_text(json.dumps(results, indent=2) + '\n')
    timing = {}
    if args.timing_steps:
        for arm in results:
            timing[arm] = isolated_step_seconds(arm, args, overrides, root)
            print(f'{arm}: {timing[arm]:.3f} s/step alone', flush=True)
    extracted = {}
    if 'tsjt_a' in results:
        config = arm_config('tsjt_a', args, overrides, root)
        tr = trainer_lib.Trainer(config, os.path.join(root, 'tsjt_a'), read_only=True)
        extracted = extraction(root, args, tr)

    def bleu(arm, cap):
        r = results.get(arm)
        return r['test'][cap]['bleu_tok_lc'] if r else None

    def secs(*names):
        return sum(results[n]['train_seconds'] for n in names if n in results)

    summary = {
        'small_solo': bleu('small_solo', ''),
        'large_solo': bleu('large_solo', ''),
        'large_deep_solo': bleu('large_deep_solo', ''),
        'small_kd': bleu('small_kd', ''),
        'small_tsjt_a': bleu('tsjt_a', 'x0.5'),
        'large_tsjt_a': bleu('tsjt_a', 'x1'),
        'small_tsjt_b': bleu('tsjt_b', 'x0.5'),
        'large_tsjt_b': bleu('tsjt_b', 'x1'),
    }
    per_direction = {
        l: {
            f'{arm}/{cap}' if cap else arm: r['test'][cap]['per_direction_tok_lc'][l]
            for arm, r in results.items()
            for cap in r['test']
        }
        for l in LANGS
    }

    def ratio(tsjt, large, times):
        if all(a in times for a in (tsjt, large, 'small_kd')):
            return times[tsjt] / (times[large] + times['small_kd'])
        return None

    # Every arm trains the same number of steps, so the ratio of step times is
    # the ratio of training times. The isolated timings are the fair one: the
    # full runs may have shared the machine with each other.
    full = {a: secs(a) for a in results}
    ratio_a = ratio('tsjt_a', 'large_solo', timing)
    ratio_b = ratio('tsjt_b', 'large_deep_solo', timing)
    targets = {}
    if None not in (summary['small_tsjt_a'], summary['small_solo']):
        targets['small_tsjt_a_ge_solo_plus_1'] = (
            summary['small_tsjt_a'] >= summary['small_solo'] + 1.0
        )
        targets['large_tsjt_a_within_0.3'] = (
            summary['large_tsjt_a'] >= summary['large_solo'] - 0.3
        )
    if None not in (summary['small_tsjt_b'], summary['small_solo']):
        targets['small_tsjt_b_ge_solo_plus_1'] = (
            summary['small_tsjt_b'] >= summary['small_solo'] + 1.0
        )
        targets['large_tsjt_b_within_0.3'] = (
            summary['large_tsjt_b'] >= summary['large_deep_solo'] - 0.3
        )
    if ratio_a is not None:
        targets['wall_ratio_le_0.7'] = ratio_a <= 0.7
    name = 'tsjt_multi30k_quick' if args.quick else 'tsjt_multi30k'
    plot = common.RESULTS / f'{name}.png'
    _plot(results, plot, args)
    result = {
        **summary,
        'wall_ratio_tsjt_vs_separate': ratio_a,
        'wall_ratio_tsjt_b_vs_separate': ratio_b,
        'wall_ratio_note': 'TSJT step time over (large solo + small KD) step '
        'times, each arm timed alone for --timing_steps steps; the *_full_runs '
        "ratios use the full runs' training times, which may have shared the "
        'machine with other work (arms.*.load_average: 1-minute load at the end)',
        'step_seconds_isolated': timing,
        'wall_ratio_tsjt_vs_separate_full_runs': ratio('tsjt_a', 'large_solo', full),
        'wall_ratio_tsjt_b_vs_separate_full_runs': ratio(
            'tsjt_b', 'large_deep_solo', full
        ),
        'targets_met': targets,
        'per_direction': per_direction,
        'metric': 'test_2016_flickr BLEU, lowercased and Moses-tokenised '
        '(sacremoses, unsmoothed: eval/bleu_tok_lc), mean over en-de, en-fr, '
        'en-cs; beam '
        f'{args.beam}; last checkpoint (no averaging); all 1,000 test '
        'sentences per direction',
        'scale': {
            'steps_per_arm': args.steps,
            'batch_tokens': args.batch_tokens,
            'vocab_size': args.vocab_size,
            'size': args.size,
            'stage2_start': int(args.steps * args.stage2_fraction),
            'quick': args.quick,
        },
        'arms_run': list(results),
        'arms_missing': [a for a in ARMS if a not in results],
        'arms_from_an_earlier_invocation': resumed,
        'arms': results,
        'extraction': extracted,
        'plot': str(plot.relative_to(common.REPO)),
    }
    common.write_result(name, result)
    print(json.dumps({k: result[k] for k in (*summary, 'wall_ratio_tsjt_vs_separate')}))


def _plot(results, path, args):
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    small = {'small_solo': '', 'small_kd': '', 'tsjt_a': 'x0.5', 'tsjt_b': 'x0.5'}
    large = {'large_solo': '', 'large_deep_solo': '', 'tsjt_a': 'x1', 'tsjt_b': 'x1'}
    for ax, group, title in (
        (axes[0], small, 'small models'),
        (axes[1], large, 'large models'),
    ):
        for arm, cap in group.items():
            if arm not in results:
                continue
            points = results[arm]['val_curve'].get(cap, [])
            if points:
                steps, values = zip(*points)
                label = f'{arm} {cap}'.strip()
                ax.plot(
                    steps,
                    values,
                    'o-' if arm.startswith('tsjt') else 's--',
                    label=label,
                )
        ax.set_title(title)
        ax.set_xlabel('step')
        ax.legend(fontsize=8)
    axes[0].set_ylabel('val BLEU (tok, lc), mean of en→de/fr/cs, greedy')
    fig.suptitle(f'TSJT on Multi30k, {args.steps} steps per arm')
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    from jaxdistill import hostmem  # pylint: disable=g-import-not-at-top

    hostmem.reexec_with_huge_pages()
    main()
