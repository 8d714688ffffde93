r"""Self-distillation (Be Your Own Teacher) vs a single-exit baseline on CIFAR-10.

    python benchmarks/self_distill_cifar10.py                 # CPU size, 3 seeds
    python benchmarks/self_distill_cifar10.py --size gpu      # ResNet-18 width 64
    python benchmarks/self_distill_cifar10.py --quick         # smoke test, ~minutes
    python benchmarks/self_distill_cifar10.py --tag sgd --config.optimizer.name=sgd \
        --config.optimizer.momentum=0.9 --config.optimizer.learning_rate=0.1 \
        --config.optimizer.weight_decay=5e-4   # an ablation, both CIFAR arms

For each seed it trains configs/self_distill_cifar10.py twice, in-process: the
baseline (method=supervised: the same backbone with only the deepest
classifier) and self-distillation (4 exits). It records the test accuracy of
every exit, each exit's measured inference time relative to the plain network
(all stages, deepest head only: the baseline's architecture), and the
early-exit curve. Writes benchmarks/results/self_distill_cifar10[_TAG][_quick].json
and two plots (accuracy per exit; accuracy vs measured inference time).
Percentages are means over seeds. Unless --no_sst2, it then does the same for
the Transformer text classifier on SST-2 (configs/self_distill_sst2.py; GLUE
dev as test set) and stores it under the key 'sst2'. With --sst2_only it runs
those arms alone (--sst2_steps, --seeds, --first_seed, --tag apply) and writes
benchmarks/results/self_distill_sst2[_TAG][_quick].json and its plot.
"""

import argparse
import json
import os
import pathlib
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

CONFIG = str(common.REPO / 'configs' / 'self_distill_cifar10.py')
SST2_CONFIG = str(common.REPO / 'configs' / 'self_distill_sst2.py')
SIZES = {
    # ResNet-10 layout (one block a stage) at width 16, batch 128, aimed at about
    # 30 min a run on a 2-core CPU: ResNet-18 width 16 measured about 5 s/step
    # here with the CPU shared 4-way. Adjust --steps from the printed ETA.
    'cpu': {
        'model.stage_sizes': (1, 1, 1, 1),
        'model.width': 16,
        'num_train_steps': 3000,
        'optimizer.warmup_steps': 200,
    },
    # The ResNet-18 of the paper's table (width 64) with the paper's optimizer
    # (SGD, momentum 0.9, lr 0.1, weight decay 5e-4; cosine instead of its step
    # decay), for a GPU. 30k steps is ~77 epochs; pass --steps for less.
    'gpu': {
        'model.width': 64,
        'num_train_steps': 30000,
        'optimizer.warmup_steps': 1000,
        'optimizer.name': 'sgd',
        'optimizer.momentum': 0.9,
        'optimizer.learning_rate': 0.1,
        'optimizer.weight_decay': 5e-4,
    },
}


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--quick', action='store_true', help='tiny smoke run (1 seed)')
    p.add_argument('--size', choices=sorted(SIZES), default='cpu')
    p.add_argument('--seeds', type=int, default=3)
    p.add_argument(
        '--first_seed',
        type=int,
        default=0,
        help='seeds FIRST..FIRST+SEEDS-1: add seeds to an earlier result on a '
        'later machine, then merge the two with --combine',
    )
    p.add_argument(
        '--combine',
        default='',
        help='train nothing: merge the results NAME1,NAME2,... (file names under '
        'benchmarks/results/, without .json; same size, steps and overrides, '
        'different seeds) into self_distill_cifar10_TAG.json',
    )
    p.add_argument('--steps', type=int, default=0, help='override num_train_steps')
    p.add_argument(
        '--warmup', type=int, default=0, help='override optimizer.warmup_steps'
    )
    p.add_argument(
        '--time_limit_minutes',
        type=float,
        default=0,
        help='start no new seed (a baseline + self-distillation pair) that the '
        "last pair's time says would end past this; 0 = no limit",
    )
    p.add_argument('--workdir', default='/tmp/jaxdistill_bench_sd')
    p.add_argument('--cache_dir', default='/tmp/jaxdistill_cache', help='decoded .npy')
    p.add_argument(
        '--data_dir', default=str(common.REPO.parent / 'shared/data/cifar10')
    )
    p.add_argument('--sst2_dir', default=str(common.REPO.parent / 'shared/data/sst2'))
    p.add_argument('--no_sst2', action='store_true', help='skip the SST-2 runs')
    p.add_argument(
        '--sst2_only',
        action='store_true',
        help='only the SST-2 runs, written to results/self_distill_sst2[_TAG].json',
    )
    p.add_argument(
        '--sst2_steps', type=int, default=0, help='override the SST-2 num_train_steps'
    )
    p.add_argument(
        '--tag', default='', help='results/self_distill_cifar10_TAG.json (ablations)'
    )
    p.add_argument(
        '--recount_flops',
        action='store_true',
        help='train nothing: recount exit_flops_fraction_sd of the existing '
        'result (same --size/--tag/overrides) with the current counter, and replot',
    )
    # --config.KEY=VALUE: overrides for both CIFAR arms (not SST-2), e.g. the
    # paper's optimizer: --config.optimizer.name=sgd --config.optimizer.momentum=0.9
    from jaxdistill import configuration  # pylint: disable=g-import-not-at-top

    rest, overrides = configuration.split_overrides(sys.argv[1:])
    args = p.parse_args(rest)
    args.overrides = overrides
    return args


def _config(args, method, seed, text=False):
    from jaxdistill import configuration  # pylint: disable=g-import-not-at-top

    arg = ','.join(filter(None, ['runlocal' if args.quick else '', f'method={method}']))
    config = configuration.load_config(f'{SST2_CONFIG if text else CONFIG}:{arg}')
    overrides = {} if args.quick or text else dict(SIZES[args.size])
    if args.quick:
        overrides.update({'num_train_steps': 30, 'eval.max_examples': 500})
    if args.steps and not text:
        overrides['num_train_steps'] = args.steps
    if args.warmup and not text:
        overrides['optimizer.warmup_steps'] = args.warmup
    if args.sst2_steps and text:
        overrides['num_train_steps'] = args.sst2_steps
    overrides.update(
        {
            'seed': seed,
            'data.data_dir': args.sst2_dir if text else args.data_dir,
            'checkpoint.every_steps': 10**9,
            'log_every_steps': 10 if args.quick else 200,
        }
    )
    if not text:
        overrides['data.cache_dir'] = args.cache_dir
    extra = [] if text else args.overrides
    config = configuration.apply_overrides(
        config, [f'{k}={v}' for k, v in overrides.items()] + extra
    )
    if config.eval.get('timing_repeats', 1) < 1:  # Before any training.
        raise SystemExit(
            'this benchmark reports measured inference time: '
            f'eval.timing_repeats={config.eval.timing_repeats} must be at least 1'
        )
    return config


def _train(args, method, seed, text=False):
    """One run -> (per-exit accuracies %, per-exit time fractions, curve).

    The record is kept as WORKDIR/METHOD_seedS.json and reused by a later
    invocation whose config for that run is the same (so an interrupted
    benchmark, or one cut by --time_limit_minutes, continues where it stopped).
    """
    from jaxdistill import trainer  # pylint: disable=g-import-not-at-top

    prefix = 'sst2_' if text else ''
    workdir = os.path.join(args.workdir, f'{prefix}{method}_seed{seed}')
    record_path = pathlib.Path(f'{workdir}.json')
    config = _config(args, method, seed, text)
    if record_path.exists():
        record = json.loads(record_path.read_text())
        if record.get('config') == config.to_json_best_effort(sort_keys=True):
            print(f'reusing {record_path}')
            return record['result']
    shutil.rmtree(workdir, ignore_errors=True)  # This script's own run folder.
    t = trainer.Trainer(config, workdir)
    summary = t.run()
    k = summary['data/num_exits']
    acc = [100 * summary[f'eval/accuracy_exit{i}'] for i in range(k - 1)]
    acc.append(100 * summary['eval/accuracy'])
    time_fraction = [summary.get(f'eval/time_fraction_exit{i}') for i in range(k)]
    result = {
        'accuracy': acc,
        'time_fraction': time_fraction,
        # Seeds do not change the architecture: count FLOPs once, on the first.
        'flops_fraction': _flops_fractions(t.task) if seed == args.first_seed else None,
        'curve': getattr(t.task, 'last_curve', []),
        'seconds_plain': summary.get('eval/seconds_plain'),
        'train_seconds': summary['train_seconds'],
        # Median over the logged windows (each compile-free): the last window
        # alone is noisy on a GPU.
        'steps_per_s': _median_rate(workdir),
        'steps': summary['step'],
    }
    record = {
        'config': config.to_json_best_effort(sort_keys=True),
        'machine': common.machine(),
        'result': result,
    }
    record_path.write_text(json.dumps(record, indent=2) + '\n')
    return result


def _median_rate(workdir):
    from jaxdistill import metrics  # pylint: disable=g-import-not-at-top

    rates = [
        r['train/steps_per_s']
        for r in metrics.read_metrics(workdir)
        if 'train/steps_per_s' in r
    ]
    return float(np.median(rates)) if rates else None


def _flops_fractions(task):
    """XLA's FLOP count of each exit prefix over that of the plain network.

    The analytic counterpart of the measured time fractions: where the two
    differ, the gap is the hardware (memory-bound full-resolution stages on a
    CPU), not the layout. Parameter values do not change FLOPs, so a fresh init
    serves. Counted on the CPU backend whatever the run's device: on a GPU the
    convolutions become cuDNN calls, and the count there came out far from the
    layout's (docs/methods/self_distillation.md).
    """
    import jax  # pylint: disable=g-import-not-at-top

    fns = task.model_fns
    cpu = jax.devices('cpu')[0]
    batch = jax.device_put(jax.device_get(task.eval_batches[0]), cpu)
    params = jax.device_put(jax.device_get(fns.init(jax.random.key(0), batch)), cpu)

    def flops(k, only_last=False):
        fn = jax.jit(
            lambda p, b: fns.apply_exits(p, b, train=False, upto=k, only_last=only_last)
        )
        return common.xla_flops(fn.lower(params, batch).compile())

    k = fns.num_exits
    plain = flops(k - 1, only_last=True)
    return [flops(i) / plain for i in range(k)]


def _mean_curve(runs):
    curve = []
    for points in zip(*[r['curve'] for r in runs]):
        curve.append(
            {
                'threshold': points[0]['threshold'],
                'accuracy': float(np.mean([100 * p['accuracy'] for p in points])),
                'time_fraction': float(np.mean([p['time_fraction'] for p in points])),
                'exit_fractions': np.mean(
                    [p['exit_fractions'] for p in points], 0
                ).tolist(),
            }
        )
    return curve


def _summarise(base, sd):
    acc_baseline = float(np.mean([r['accuracy'][-1] for r in base]))
    acc_exits = np.mean([r['accuracy'] for r in sd], axis=0).tolist()
    exit_time = np.mean([r['time_fraction'] for r in sd], axis=0).tolist()
    exit_flops = sd[0]['flops_fraction']
    curve = _mean_curve(sd)
    return {
        'acc_baseline': acc_baseline,
        'acc_exits_sd': acc_exits,
        'exit_time_fraction_sd': exit_time,
        'exit_flops_fraction_sd': exit_flops,
        'early_exit_curve': curve,
        'acc_baseline_per_seed': [r['accuracy'][-1] for r in base],
        'acc_exits_sd_per_seed': [r['accuracy'] for r in sd],
        'seconds_plain_network_eval': [r['seconds_plain'] for r in base],
        'train_seconds': {
            'baseline': [r['train_seconds'] for r in base],
            'self_distill': [r['train_seconds'] for r in sd],
        },
        'targets': _targets(acc_baseline, acc_exits, exit_time, curve),
    }


def _targets(acc_baseline, acc_exits, exit_time, curve):
    """The issue's two targets, from means over seeds."""
    cheap_close = [
        i
        for i, (a, f) in enumerate(zip(acc_exits, exit_time))
        if f <= 0.5 and a >= acc_baseline - 1.5
    ] + [
        f'curve@{p["threshold"]:g}'
        for p in curve
        if p['time_fraction'] <= 0.5 and p['accuracy'] >= acc_baseline - 1.5
    ]
    return {
        'deepest_minus_baseline': acc_exits[-1] - acc_baseline,
        'deepest_at_least_baseline_plus_1': acc_exits[-1] >= acc_baseline + 1.0,
        'exits_within_1.5_at_half_time': cheap_close,
        'cheap_exit_target_met': bool(cheap_close),
    }


def _plot(result, name, dataset='CIFAR-10'):
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    acc = result['acc_exits_sd']
    ax1.bar(range(len(acc)), acc, color='tab:blue', label='self-distillation exits')
    ax1.axhline(
        result['acc_baseline'], color='k', ls='--', label='baseline (single exit)'
    )
    ax1.set_xticks(range(len(acc)), [f'exit {i}' for i in range(len(acc))])
    ax1.set_ylabel('test accuracy (%)')
    ax1.set_ylim(max(0, min(acc + [result['acc_baseline']]) - 10), 100)
    ax1.legend(loc='lower right')
    ax1.set_title(f'{dataset} accuracy per exit (mean over seeds)')
    curve = result['early_exit_curve']
    ax2.plot(
        [p['time_fraction'] for p in curve],
        [p['accuracy'] for p in curve],
        'o-',
        label='early exit (thresholds)',
    )
    ax2.plot(result['exit_time_fraction_sd'], acc, 's', label='single exit k')
    ax2.plot(
        result['exit_flops_fraction_sd'], acc, 'x', color='gray', label='exit k, FLOPs'
    )
    ax2.axhline(result['acc_baseline'], color='k', ls='--', label='baseline')
    ax2.axvline(1.0, color='gray', lw=0.5)
    ax2.set_xlabel('measured inference time (FLOPs: x) / plain network')
    ax2.set_ylabel('test accuracy (%)')
    ax2.legend(loc='lower right')
    ax2.set_title('Anytime inference')
    fig.tight_layout()
    path = common.RESULTS / f'{name}.png'
    fig.savefig(path, dpi=120)
    print(f'wrote {path}')


def _pairs(args, seeds, on_pair=lambda base, sd: None):
    """(baseline runs, self-distillation runs), a seed's pair at a time.

    Pairs rather than all baselines first, so that a run cut short by
    --time_limit_minutes still compares like with like. `on_pair(base, sd)`
    is called after each pair (the result so far is written then, so a run
    killed during a later seed still leaves the seeds it finished).
    """
    import jax  # pylint: disable=g-import-not-at-top

    os.makedirs(args.workdir, exist_ok=True)
    # Seeds after the first reuse the first's compiled programs.
    jax.config.update('jax_compilation_cache_dir', os.path.join(args.workdir, 'jit'))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
    start, last, base, sd = time.time(), 0.0, [], []
    for seed in seeds:
        left = args.time_limit_minutes * 60 - (time.time() - start)
        # The first pair compiles too: an estimate on the safe side.
        if args.time_limit_minutes and base and last > left:
            print(
                f'time limit: seed {seed} would need ~{last:.0f}s, {left:.0f}s '
                f'left; stopping at {len(base)} seed(s).'
            )
            break
        t0 = time.time()
        base.append(_train(args, 'supervised', seed))
        sd.append(_train(args, 'self_distill', seed))
        last = time.time() - t0
        on_pair(base, sd)
    return base, sd


def _recount_flops(args, name):
    """Rewrites NAME.json's FLOPs fractions with `_flops_fractions` as it is now."""
    import tempfile  # pylint: disable=g-import-not-at-top

    from jaxdistill import trainer  # pylint: disable=g-import-not-at-top

    path = common.RESULTS / f'{name}.json'
    result = json.loads(path.read_text())
    with tempfile.TemporaryDirectory() as workdir:
        t = trainer.Trainer(_config(args, 'self_distill', 0), workdir)
        flops = _flops_fractions(t.task)
    # The figures the run itself wrote, kept through later recounts.
    result.setdefault(
        'exit_flops_fraction_sd_before_recount', result['exit_flops_fraction_sd']
    )
    result['exit_flops_fraction_sd'] = flops
    result['flops_recount'] = common.provenance()
    path.write_text(json.dumps(result, indent=2) + '\n')
    print(f'wrote {path}: exit_flops_fraction_sd {flops}')
    _plot(result, name)


def _settings(args, seeds, base, sd):
    return {
        'quick': args.quick,
        'size': 'runlocal' if args.quick else args.size,
        'seeds': len(base),
        'seeds_asked': len(seeds),
        'seed_list': list(seeds)[: len(base)],
        'steps': base[0]['steps'],
        'warmup_steps': args.warmup or None,
        'preset': {} if args.quick else dict(SIZES[args.size]),
        'config_overrides': args.overrides,
        'steps_per_s': {
            'baseline': [r.get('steps_per_s') for r in base],
            'self_distill': [r.get('steps_per_s') for r in sd],
        },
    }


# Settings that must agree for results to be merged (the rest may differ).
_SAME = ('quick', 'size', 'steps', 'warmup_steps', 'preset', 'config_overrides')
# Means over seeds (merged weighted by seed count); per-seed lists (joined).
_MEANS = ('acc_baseline', 'acc_exits_sd', 'exit_time_fraction_sd')
_LISTS = (
    'acc_baseline_per_seed',
    'acc_exits_sd_per_seed',
    'seconds_plain_network_eval',
)


def _combine(names):
    """Results of disjoint seeds of one setting -> one result over all of them.

    Every figure in a result is a mean over its seeds or a per-seed list, so the
    merge is exact: means weighted by seed count, lists joined. Measured time
    fractions are ratios taken within each run; where the parts ran on different
    machines the merged fractions average across them, and `parts` names each.
    """
    parts = []
    for name in names:
        path = common.RESULTS / f'{name}.json'
        if not path.exists():
            raise SystemExit(f'--combine: no result {path}')
        parts.append((name, json.loads(path.read_text())))
    first = parts[0][1]['settings']
    for name, part in parts[1:]:
        for key in _SAME:
            if part['settings'].get(key) != first.get(key):
                raise SystemExit(
                    f'--combine: {name} has settings.{key} = '
                    f'{part["settings"].get(key)!r}, {parts[0][0]} has '
                    f'{first.get(key)!r}; only runs of one setting can be merged'
                )
        if 'sst2' in part:
            raise SystemExit(
                f'--combine: {name} holds SST-2 runs; merge --no_sst2 ones'
            )
    seed_lists = [_seed_list(part['settings']) for _, part in parts]
    seen = [s for seeds in seed_lists for s in seeds]
    if len(set(seen)) != len(seen):
        raise SystemExit(f'--combine: the parts repeat seeds {seed_lists}')
    weights = np.array([len(seeds) for seeds in seed_lists], float)
    mean = lambda values: (
        np.tensordot(weights, np.asarray(values, float), axes=1) / weights.sum()
    ).tolist()
    result = {key: mean([p[key] for _, p in parts]) for key in _MEANS}
    for key in _LISTS:
        result[key] = [v for _, p in parts for v in p[key]]
    # FLOPs depend on the architecture alone (each part counts them once).
    result['exit_flops_fraction_sd'] = parts[0][1]['exit_flops_fraction_sd']
    thresholds = [[q['threshold'] for q in p['early_exit_curve']] for _, p in parts]
    if any(t != thresholds[0] for t in thresholds):
        raise SystemExit(f'--combine: the parts have different thresholds {thresholds}')
    result['early_exit_curve'] = [
        {
            'threshold': points[0]['threshold'],
            **{
                key: mean([q[key] for q in points])
                for key in ('accuracy', 'time_fraction', 'exit_fractions')
            },
        }
        for points in zip(*[p['early_exit_curve'] for _, p in parts])
    ]
    result['train_seconds'] = {
        arm: [v for _, p in parts for v in p['train_seconds'][arm]]
        for arm in ('baseline', 'self_distill')
    }
    result['targets'] = _targets(
        result['acc_baseline'],
        result['acc_exits_sd'],
        result['exit_time_fraction_sd'],
        result['early_exit_curve'],
    )
    result['settings'] = {
        **{key: first.get(key) for key in _SAME},
        'seeds': int(weights.sum()),
        'seed_list': seen,
        'steps_per_s': {
            arm: [v for _, p in parts for v in p['settings']['steps_per_s'][arm]]
            for arm in ('baseline', 'self_distill')
        },
    }
    result['parts'] = [
        {
            'name': name,
            'seeds': seeds,
            **{key: part.get(key) for key in ('command', 'date', 'machine')},
        }
        for (name, part), seeds in zip(parts, seed_lists)
    ]
    return result


def _seed_list(settings):
    """The seeds a result holds (older results ran seeds 0..n-1)."""
    return settings.get('seed_list', list(range(settings['seeds'])))


def _report(result):
    for key in (
        'acc_baseline',
        'acc_exits_sd',
        'exit_time_fraction_sd',
        'exit_flops_fraction_sd',
        'targets',
    ):
        print(f'{key}: {result[key]}')
    if 'sst2' in result:
        print(
            f'sst2: baseline {result["sst2"]["acc_baseline"]:.2f}, exits '
            f'{result["sst2"]["acc_exits_sd"]}'
        )


def _text_pairs(args, seeds):
    """The SST-2 baseline and self-distillation runs -> their summary."""
    text_base = [_train(args, 'supervised', s, text=True) for s in seeds]
    text_sd = [_train(args, 'self_distill', s, text=True) for s in seeds]
    return dict(
        _summarise(text_base, text_sd),
        steps=text_base[0]['steps'],
        seed_list=list(seeds),
    )


def _sst2_only(args, seeds):
    if args.no_sst2 or args.combine or args.overrides:
        raise SystemExit(
            '--sst2_only runs the SST-2 arms alone: it takes none of --no_sst2, '
            '--combine or --config.* (those are CIFAR settings)'
        )
    name = '_'.join(
        filter(None, ['self_distill_sst2', args.tag, 'quick' if args.quick else ''])
    )
    os.makedirs(args.workdir, exist_ok=True)
    result = _text_pairs(args, seeds)
    common.write_result(name, result)
    _plot(result, name, dataset='SST-2 (GLUE dev)')
    _report(result)


def main():
    args = _parse()
    name = '_'.join(
        filter(None, ['self_distill_cifar10', args.tag, 'quick' if args.quick else ''])
    )
    if args.recount_flops:
        _recount_flops(args, name)
        return
    if args.combine:
        result = _combine([n.strip() for n in args.combine.split(',') if n.strip()])
        common.write_result(name, result)
        _plot(result, name)
        _report(result)
        return
    seeds = range(args.first_seed, args.first_seed + (1 if args.quick else args.seeds))
    if args.sst2_only:
        _sst2_only(args, seeds)
        return

    for method in ('supervised', 'self_distill'):  # Refused before anything runs.
        _config(args, method, seeds[0])

    def summary(base, sd):
        return dict(_summarise(base, sd), settings=_settings(args, seeds, base, sd))

    # The CIFAR result is written after every pair; the SST-2 runs come last.
    base, sd = _pairs(
        args, seeds, on_pair=lambda b, s: common.write_result(name, summary(b, s))
    )
    result = summary(base, sd)
    if not args.no_sst2:
        result['sst2'] = _text_pairs(args, seeds)
        common.write_result(name, result)
    _plot(result, name)
    _report(result)


if __name__ == '__main__':
    from jaxdistill import hostmem  # pylint: disable=g-import-not-at-top

    hostmem.reexec_with_huge_pages()
    main()
