"""`python -m jaxdistill.translate --workdir DIR [--step N] [--average N] [--beam N]`.

Reads sentences from stdin, one a line, and writes their translations to
stdout, one a line in the same order (blank lines stay blank). Uses the model,
tokenizer and config of the run in DIR (DIR/config.json, DIR/spm.model,
DIR/checkpoints): the latest checkpoint or `--step`, or the mean of the last
`--average` checkpoints up to it. Beam size and length penalty default to the
run's `eval.beam_size` and `eval.length_penalty`; `--config.k=v` changes other
fields (e.g. `--config.eval.max_decode_len=100`).

  echo 'A man rides a bike.' | python -m jaxdistill.translate --workdir /tmp/m30k \\
      --average 10 --beam 5
"""

import math
import os
import select
import stat
import sys


from jaxdistill import cli
from jaxdistill import configuration
from jaxdistill import hostmem
from jaxdistill.errors import ConfigError, DataError, JaxdistillError


def _parse(argv):
    parser = cli.parser_for('translate', __doc__)
    parser.add_argument('--workdir', required=True, help='the training run')
    parser.add_argument('--step', type=cli.step_arg, default=None, help=cli.STEP_HELP)
    parser.add_argument(
        '--average',
        type=int,
        default=1,
        help='average the last N checkpoints up to --step (default 1: none)',
    )
    parser.add_argument(
        '--beam', type=int, default=None, help='beam size; 0 or 1 = greedy'
    )
    parser.add_argument(
        '--length_penalty', type=float, default=None, help='alpha of logp/len**alpha'
    )
    parser.add_argument('--batch_size', type=int, default=64, help='sentences a batch')
    parser.add_argument(
        '--capacity',
        default=None,
        help="which of a run's models: a TSJT capacity ('x0.25'), a "
        "codistillation replica ('r1'), a self-distillation decoder exit "
        '(default: the one the run evaluates)',
    )
    parser.add_argument(
        '--target_lang', default=None, help='for runs with several target languages'
    )
    rest, overrides = cli.split_overrides(parser, argv)
    return cli.expand_user(parser.parse_args(rest)), overrides


def pick_model(method, params, extra, name, workdir: str):
    """Parameters of the model `name` among the run's (`method.eval_models`:
    a TSJT capacity 'x0.25', a codistillation replica 'r1', a
    self-distillation decoder exit); None: the model the run evaluates."""
    if name is None:
        return method.eval_params(params, extra)
    models = method.eval_models(params, extra)
    if name in models:
        return models[name]
    if list(models) == ['']:
        raise ConfigError(
            f'--capacity {name}: {workdir} trained one model; --capacity '
            'picks one of a run of several (TSJT capacities, codistillation '
            'replicas, self-distillation decoder exits).'
        )
    raise ConfigError(
        f'--capacity {name}: {workdir} has the models {", ".join(models)}.'
    )


def load_model(workdir: str, config, *, step=None, average: int = 1, capacity=None):
    """(model, params, tokenizer, steps averaged) of the run in `workdir`.

    `capacity` names one of the run's models (`pick_model`); default the one
    it evaluates (the largest capacity, replica 0, the deepest exit).
    """
    from jaxdistill import averaging  # pylint: disable=g-import-not-at-top
    from jaxdistill import data as data_lib  # pylint: disable=g-import-not-at-top
    from jaxdistill import optim  # pylint: disable=g-import-not-at-top
    from jaxdistill.methods import make_method  # pylint: disable=g-import-not-at-top
    from jaxdistill.models import transformer as transformer_lib  # pylint: disable=g-import-not-at-top
    from jaxdistill.tasks import translation  # pylint: disable=g-import-not-at-top

    tokenizer = data_lib.Tokenizer.load(os.path.join(workdir, 'spm.model'))
    model, fns, _ = translation.model_fns_for(config.model, tokenizer.vocab_size)
    method = make_method(config.method, fns)
    use_ema = config.eval.get('use_ema', True)

    def select(state):
        params = optim.model_params(state, use_ema)
        return pick_model(method, params, state.get('extra', {}), capacity, workdir)

    params, steps = averaging.average_checkpoints(
        os.path.join(workdir, 'checkpoints'),
        average,
        upto=step,
        select=select,
        keep=config.checkpoint.keep,
    )
    model = transformer_lib.Transformer(
        transformer_lib.infer_config(params, model.config)
    )
    return model, params, tokenizer, steps


def main(argv=None) -> int:
    cli.quiet_tensorflow()
    args, overrides = _parse(sys.argv[1:] if argv is None else argv)

    def run():
        config = cli.workdir_config(
            args.workdir, task='translation', needed_by='translate'
        )
        config = configuration.apply_overrides(config, overrides)
        # Decoding loops compiled by an earlier call on this workdir load back.
        from jaxdistill import compile_cache  # pylint: disable=g-import-not-at-top

        compile_cache.use(
            config.get('compilation_cache_dir', 'auto'), args.workdir, read_only=True
        )
        if args.batch_size < 1:
            raise JaxdistillError(f'--batch_size must be >= 1, got {args.batch_size}.')
        if args.average < 1:
            raise JaxdistillError(f'--average must be >= 1, got {args.average}.')
        if args.beam is not None and args.beam < 0:
            raise JaxdistillError(
                f'--beam must be >= 0 (0 or 1: greedy), got {args.beam}.'
            )
        penalty = args.length_penalty
        if penalty is not None and not (math.isfinite(penalty) and penalty >= 0):
            raise JaxdistillError(
                f'--length_penalty must be a finite number >= 0, got {penalty}.'
            )
        from jaxdistill.tasks import translation  # pylint: disable=g-import-not-at-top

        model, params, tokenizer, steps = load_model(
            args.workdir,
            config,
            step=cli.resolve_step(args.workdir, config, args.step),
            average=args.average,
            capacity=args.capacity,
        )
        e = config.eval
        counts = {'lines': 0, 'cut': 0, 'unfinished': 0}

        def translate(texts):
            return translation.translate_texts(
                model,
                params,
                tokenizer,
                texts,
                data_cfg=config.data,
                beam_size=e.get('beam_size', 0) if args.beam is None else args.beam,
                max_len=e.max_decode_len,
                length_penalty=e.get('length_penalty', 1.0)
                if args.length_penalty is None
                else args.length_penalty,
                batch_size=args.batch_size,
                target_lang=args.target_lang,
                on_cut=lambda n: counts.update(cut=counts['cut'] + n),
                on_unfinished=lambda n: counts.update(
                    unfinished=counts['unfinished'] + n
                ),
            )

        translate([])  # The settings' errors, before anything is read.
        stdin = getattr(sys.stdin, 'buffer', sys.stdin)
        streaming = _is_stream(stdin)
        if streaming:
            tty = ' (one sentence a line; Ctrl-D ends)' if stdin.isatty() else ''
            print(
                f'translating stdin as it comes{tty}, with checkpoint(s) {steps}',
                file=sys.stderr,
                flush=True,
            )
            # Up to 16 batches a chunk while lines keep coming (`cat file |`):
            # sorted by length within it, as a file read whole is, the
            # batches carry little padding; a lull ends a chunk sooner.
            chunks = read_chunks(stdin, 'stdin', 16 * args.batch_size)
        else:
            texts = read_lines(stdin, 'stdin')
            print(
                f'translating {len(texts)} lines with checkpoint(s) {steps}',
                file=sys.stderr,
                flush=True,
            )
            chunks = [texts]
        for texts in chunks:
            counts['lines'] += len(texts)
            sys.stdout.write(''.join(line + '\n' for line in translate(texts)))
            sys.stdout.flush()
        if counts['cut']:
            print(
                f'note: {counts["cut"]} of {counts["lines"]} lines were longer '
                'than the source tokens the run allows (data.max_len='
                f'{config.data.max_len}, with EOS and any language tag) and '
                'were cut.',
                file=sys.stderr,
            )
        if counts['unfinished']:
            print(
                f'note: {counts["unfinished"]} of {counts["lines"]} translations '
                f'reached eval.max_decode_len={e.max_decode_len} tokens without '
                'ending and were cut there; raise it with '
                '--config.eval.max_decode_len=N (up to model.max_len).',
                file=sys.stderr,
            )

    return cli.main_guard(run)


def read_lines(stream, name: str) -> list[str]:
    """The lines of a binary stream as text, without their line ends; a
    DataError naming the line that is not valid UTF-8. (A text stream's
    lines are taken as they are.)"""
    return [_text(raw, number, name) for number, raw in enumerate(stream, 1)]


def _text(raw, number: int, name: str) -> str:
    if isinstance(raw, str):
        return raw.rstrip('\r\n')
    try:
        return raw.decode('utf-8').rstrip('\r\n')
    except UnicodeDecodeError as e:
        raise DataError(
            f'{name} line {number}: invalid UTF-8 (byte offset {e.start}); '
            'translate reads UTF-8 text, one sentence a line.'
        ) from None


def _is_stream(stream) -> bool:
    """Whether `stream` is a pipe or terminal (lines arrive over time), not
    a file read whole (or an in-memory stream)."""
    try:
        return not stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):
        return False


def read_chunks(stream, name: str, size: int, wait: float = 0.05):
    """Yields the lines of a pipe or terminal as they arrive, in chunks of
    up to `size`: a chunk ends at `size` lines, or when no further line
    arrives within `wait` seconds of the last, so that each sentence typed
    (or written by a slow producer) is translated before the next comes.
    Reads the file descriptor itself: a buffered reader would hold lines
    that `select` cannot see."""
    fd = stream.fileno()
    buffer, ended, number = b'', False, 0
    while True:
        lines = []
        while len(lines) < size:
            if b'\n' in buffer:
                line, buffer = buffer.split(b'\n', 1)
                lines.append(line)
                continue
            if ended:
                if buffer:  # The last line, without its newline.
                    lines.append(buffer)
                    buffer = b''
                break
            ready, _, _ = select.select([fd], [], [], wait if lines else None)
            if not ready:
                break  # Nothing more for now: translate what has come.
            data = os.read(fd, 1 << 16)
            ended = not data
            buffer += data
        if not lines:
            return
        texts = []
        for raw in lines:
            number += 1
            texts.append(_text(raw, number, name))
        yield texts


if __name__ == '__main__':
    hostmem.reexec_with_huge_pages()
    cli.exit_process(main())
