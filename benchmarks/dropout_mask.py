"""Train-step cost of dropout masks at 32, 16 and 8 random bits per element.

    python benchmarks/dropout_mask.py [--config configs/translate_multi30k.py:budget]
        [--lengths 12,16,24] [--repeats 10]
    # GPU: the same with a bigger config, e.g. --config configs/translate_multi30k.py

Builds one Trainer per arm of the config in this process: the config's
dropout with `model.dropout_mask_bits` 32 (flax.linen.Dropout), 16 and 8,
and the floor, every dropout rate 0. Their train steps run alternately on the
same batch of each `--lengths` bucket (medians of `--repeats`). Also times
drawing the masks alone, jitted, for as many elements as one step of the
config draws at the middle bucket, and records each arm's effective rates
(models/dropout.py rounds them to multiples of 2**-bits).

Writes benchmarks/results/dropout_mask.json and .png.
"""

import argparse
import copy
import pathlib
import sys
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxdistill import configuration  # pylint: disable=g-import-not-at-top
from jaxdistill.models import dropout as dropout_lib  # pylint: disable=g-import-not-at-top

RATES = ('dropout_rate', 'attention_dropout_rate', 'activation_dropout_rate')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='configs/translate_multi30k.py:budget')
    parser.add_argument(
        '--data_dir',
        '--data-dir',
        default=str(common.REPO.parent / 'shared' / 'data' / 'multi30k'),
    )
    parser.add_argument('--lengths', default='12,16,24')
    parser.add_argument('--repeats', type=int, default=10)
    common.add_tag(parser)
    args = parser.parse_args()
    try:
        args.lengths = [int(x) for x in args.lengths.split(',') if x]
    except ValueError:
        parser.error(
            f'--lengths must be comma-separated integers, got {args.lengths!r}'
        )
    if args.repeats < 1 or not args.lengths:
        parser.error('--repeats must be >= 1 and --lengths non-empty.')
    return args


def arm_configs(config) -> dict:
    arms = {}
    for bits in (32, 16, 8):
        arm = configuration.apply_overrides(
            copy.deepcopy(config), [f'model.dropout_mask_bits={bits}']
        )
        arms[f'bits{bits}'] = arm
    # apply_overrides edits the config it is given.
    arms['no_dropout'] = configuration.apply_overrides(
        copy.deepcopy(config),
        [f'model.{key}=0.0' for key in RATES if key in config.model],
    )
    return arms


def mask_elements(config, row) -> int:
    """Mask elements one train step of the config's Transformer draws."""
    m = config.model
    tokens_src = int(np.prod(row['inputs_shape']))
    tokens_tgt = int(np.prod(row['targets_shape']))
    residual = m.dropout_rate > 0
    # Embeddings (2), 2 branches per encoder layer, 3 per decoder layer.
    count = (
        residual
        * m.d_model
        * (
            tokens_src * (1 + 2 * m.num_encoder_layers)
            + tokens_tgt * (1 + 3 * m.num_decoder_layers)
        )
    )
    if m.get('activation_dropout_rate', 0.0):
        count += m.d_ff * (
            tokens_src * m.num_encoder_layers + tokens_tgt * m.num_decoder_layers
        )
    if m.get('attention_dropout_rate', 0.0):
        rows, src = row['inputs_shape']
        tgt = row['targets_shape'][1]
        count += (
            rows
            * m.num_heads
            * (
                m.num_encoder_layers * src * src
                + m.num_decoder_layers * (tgt * tgt + tgt * src)
            )
        )
    return int(count)


def time_masks(elements: int, rate: float, repeats: int) -> dict:
    out = {}
    for bits in (32, 16, 8):
        draw = jax.jit(
            lambda key, bits=bits: dropout_lib.keep_mask(key, rate, (elements,), bits)[
                0
            ]
        )
        key = jax.random.key(0)
        jax.block_until_ready(draw(key))
        times = []
        for i in range(repeats):
            t = time.perf_counter()
            jax.block_until_ready(draw(jax.random.fold_in(key, i)))
            times.append(time.perf_counter() - t)
        out[f'bits{bits}'] = float(np.median(times))
    return out


def main():
    args = parse_args()
    import train_step_throughput as tst  # pylint: disable=g-import-not-at-top

    config = tst.load_config(args.config, args.data_dir)
    if 'dropout_mask_bits' not in config.model:
        raise SystemExit(f'{args.config}: model.dropout_mask_bits is not a key there.')
    rows = tst.alternate_steps(arm_configs(config), args.lengths, args.repeats)
    middle = rows[len(rows) // 2]
    for row in rows:
        med = row['step_seconds_median']
        row['speedup_vs_bits32'] = {n: med['bits32'] / v for n, v in med.items()}
        print(
            f'bucket {row["bucket_length"]}: '
            + ', '.join(f'{n} {v:.3f} s' for n, v in med.items())
        )
    elements = mask_elements(config, middle)
    rate = float(config.model.dropout_rate)
    masks = time_masks(elements, rate, args.repeats)
    print(f'{elements / 1e6:.1f}M mask elements, rate {rate}: {masks}')
    result = {
        'config': args.config,
        'rows': rows,
        'mask_elements_per_step': elements,
        'mask_bucket_length': middle['bucket_length'],
        'mask_seconds_median': masks,
        'effective_rates': {
            f'bits{bits}': {
                key: dropout_lib.effective_rate(float(config.model[key]), bits)
                for key in RATES
                if key in config.model
            }
            for bits in (32, 16, 8)
        },
    }
    common.write_result(common.stem('dropout_mask', args), result)
    _plot(result, common.RESULTS / f'{common.stem("dropout_mask", args)}.png')


def _plot(result, path):
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    import train_step_throughput as tst  # pylint: disable=g-import-not-at-top

    fig, ax = plt.subplots(figsize=(6, 3.4))
    tst.plot_bucket_bars(ax, result['rows'], f'Dropout mask bits, {result["config"]}')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f'wrote {path}')


if __name__ == '__main__':
    from jaxdistill import hostmem  # pylint: disable=g-import-not-at-top

    hostmem.reexec_with_huge_pages()
    main()
