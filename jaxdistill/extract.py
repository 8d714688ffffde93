"""`python -m jaxdistill.extract --workdir RUN --capacity NAME --out DIR [--step N]`.

Writes one model of a run of several (a TSJT capacity, a codistillation
replica, a self-distillation decoder exit) as a standalone run of a plain
Transformer in DIR: its config (method 'supervised', no composite, the
capacity's layers/heads/FFN units), the run's tokenizer, and a checkpoint at
the same step holding only that capacity's parameters. `evaluate` and
`translate` then load DIR like any training run:

  python -m jaxdistill.extract --workdir /tmp/tsjt --capacity x0.25 --out /tmp/small
  python -m jaxdistill.evaluate --workdir /tmp/small
  echo "a sentence" | python -m jaxdistill.translate --workdir /tmp/small

The optimizer state starts fresh (Adam moments of a slice are not kept), so
training on in DIR fine-tunes the extracted model from its parameters.
"""

import json
import os
import shutil
import sys

from jaxdistill import cli
from jaxdistill import configuration
from jaxdistill import hostmem
from jaxdistill import translate
from jaxdistill.errors import JaxdistillError


def _parse(argv):
    parser = cli.parser_for('extract', __doc__)
    parser.add_argument('--workdir', required=True, help='the run of several models')
    parser.add_argument(
        '--capacity', required=True, help="capacity name, e.g. 'x0.25' (see the log)"
    )
    parser.add_argument('--out', required=True, help='new run directory to write')
    parser.add_argument('--step', type=cli.step_arg, default=None, help=cli.STEP_HELP)
    return cli.expand_user(parser.parse_args(argv))


def _check_out(out: str):
    """An --out that would overwrite something, or cannot be a folder: an error."""
    cli.check_local(out, '--out')
    if os.path.exists(out) and not os.path.isdir(out):
        raise JaxdistillError(f'--out {out} is a file; give a new folder.')
    held = [
        name
        for name in ('checkpoints', 'config.json', 'spm.model')
        if os.path.exists(os.path.join(out, name))
    ]
    if held:
        raise JaxdistillError(
            f'--out {out} already holds {", ".join(held)} (another run or '
            'model); choose a new folder.'
        )


def extract(workdir: str, capacity: str, out: str, *, step: int | None = None) -> dict:
    """Writes capacity `capacity` of the run in `workdir` to `out`; returns a summary."""
    import jax  # pylint: disable=g-import-not-at-top
    import ml_collections  # pylint: disable=g-import-not-at-top

    from jaxdistill import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
    from jaxdistill import data as data_lib  # pylint: disable=g-import-not-at-top
    from jaxdistill import optim  # pylint: disable=g-import-not-at-top
    from jaxdistill import sharding  # pylint: disable=g-import-not-at-top
    from jaxdistill import train_step as train_step_lib  # pylint: disable=g-import-not-at-top
    from jaxdistill.methods import make_method  # pylint: disable=g-import-not-at-top
    from jaxdistill.models import transformer as transformer_lib  # pylint: disable=g-import-not-at-top
    from jaxdistill.tasks import translation  # pylint: disable=g-import-not-at-top

    _check_out(out)  # Before any work.
    config = cli.workdir_config(workdir, task='translation', needed_by='extract')
    tokenizer = data_lib.Tokenizer.load(os.path.join(workdir, 'spm.model'))
    model, fns, _ = translation.model_fns_for(config.model, tokenizer.vocab_size)
    ckpt_dir = os.path.join(workdir, 'checkpoints')
    if step is None:
        step, step_dir = checkpoint_lib.latest_step_dir(ckpt_dir)
    else:
        step_dir = os.path.join(ckpt_dir, str(step))
        if not os.path.isdir(step_dir):
            raise JaxdistillError(
                f'No checkpoint for step {step} in {ckpt_dir}; available: '
                f'{cli.saved_steps(ckpt_dir)}.'
            )
    state = checkpoint_lib.read_state(step_dir)
    meta = checkpoint_lib.read_meta(step_dir)  # Read before --out is written.
    everything = jax.device_get(
        optim.model_params(state, config.eval.get('use_ema', True))
    )
    extra = jax.device_get(state.get('extra', {}))
    run_method = make_method(config.method, fns)
    # A one-model run, or a name it lacks: a ConfigError listing its models.
    params = translate.pick_model(run_method, everything, extra, capacity, workdir)
    largest = run_method.eval_params(everything, extra)
    small = transformer_lib.infer_config(params, model.config)

    new = ml_collections.ConfigDict(config.to_dict())
    for key in (
        'num_encoder_layers',
        'num_decoder_layers',
        'd_model',
        'num_heads',
        'd_ff',
    ):
        new.model[key] = getattr(small, key)
    new.model.head_size = small.head_size
    new.model.composite.kind = ''
    new.method = ml_collections.ConfigDict(
        {
            'name': 'supervised',
            'label_smoothing': config.method.get('label_smoothing', 0.0),
        }
    )
    cli.make_folder(out, '--out')
    # The sidecar records the vocabulary size the run asked for, which the
    # config keeps (SentencePiece may have given fewer pieces).
    for name in ('spm.model', 'spm.model.json'):
        if os.path.exists(os.path.join(workdir, name)):
            shutil.copy(os.path.join(workdir, name), os.path.join(out, name))
    with open(os.path.join(out, 'config.json'), 'w', encoding='utf-8') as f:
        f.write(configuration.to_json(new))

    _, fns, _ = translation.model_fns_for(new.model, tokenizer.vocab_size)
    method = make_method(new.method, fns)
    tx = optim.make_optimizer(new.optimizer)
    mesh = sharding.make_mesh(1, devices=jax.local_devices()[:1])
    batch = {
        'inputs': jax.numpy.ones((1, 8), 'int32'),
        'targets': jax.numpy.ones((1, 8), 'int32'),
    }
    init_fn, state_sharding, _ = train_step_lib.make_init(
        method, tx, batch, mesh, seed=config.seed
    )
    state = init_fn()
    params = jax.device_put(params, state_sharding.params)
    state = state.replace(
        step=jax.numpy.asarray(step, jax.numpy.int32),
        params=params,
        # A fresh optimizer state of these parameters: a moving average
        # (`optimizer.ema_decay`), which evaluation reads by default, starts
        # as the extracted model, not as the random init.
        opt_state=jax.device_put(tx.init(params), state_sharding.opt_state),
    )
    saver = checkpoint_lib.Checkpointer(
        os.path.join(out, 'checkpoints'), every=1, keep=1, async_save=False
    )
    saver.save(step, state, meta, force=True)
    saver.wait()
    saver.close()
    summary = {
        'capacity': capacity,
        'step': int(step),
        'num_params': transformer_lib.count_params(params),
        # The model the run evaluates: the largest capacity, replica 0.
        'num_params_largest': transformer_lib.count_params(largest),
        'architecture': {
            k: getattr(small, k)
            for k in (
                'num_encoder_layers',
                'num_decoder_layers',
                'd_model',
                'num_heads',
                'head_dim',
                'd_ff',
            )
        },
        'out': out,
    }
    with open(os.path.join(out, 'extracted.json'), 'w', encoding='utf-8') as f:
        json.dump({**summary, 'from': os.path.abspath(workdir)}, f, indent=2)
    return summary


def main(argv=None) -> int:
    cli.quiet_tensorflow()
    args = _parse(sys.argv[1:] if argv is None else argv)

    def run():
        step = cli.resolve_step(
            args.workdir, cli.workdir_config(args.workdir), args.step
        )
        summary = extract(args.workdir, args.capacity, args.out, step=step)
        print(json.dumps(summary, indent=2))

    return cli.main_guard(run)


if __name__ == '__main__':
    hostmem.reexec_with_huge_pages()
    cli.exit_process(main())
