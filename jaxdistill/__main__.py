"""`python -m jaxdistill`: lists the command-line tools.

`python -m jaxdistill NAME ARGS...` runs `python -m jaxdistill.NAME ARGS...`.
"""

import runpy
import sys

COMMANDS = {
    'train': 'train a config (resumes from the latest checkpoint in --workdir)',
    'evaluate': "evaluate a run's checkpoint with its own config",
    'translate': 'translate stdin with a trained translation run',
    'extract': 'write one model of a run (capacity, replica, exit) as a run',
    'plot': "draw runs' curves from their metrics.jsonl",
    'runs': 'where each run in some folders stands: step, state, evaluations',
    'sweep': 'train a config over a grid of settings; mean ± std over seeds',
    'word2vec': 'train skip-gram word vectors (word2vec text format)',
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] not in ('-h', '--help'):
        name = argv[0]
        if name not in COMMANDS:
            print(
                f'error: no command {name!r}; the commands: '
                f'{", ".join(COMMANDS)} (python -m jaxdistill.NAME, or '
                'python -m jaxdistill NAME).',
                file=sys.stderr,
            )
            return 2
        # As `python -m jaxdistill.NAME ARGS...`: its own main, exit status
        # and help (which names it).
        sys.argv = [f'python -m jaxdistill.{name}', *argv[1:]]
        runpy.run_module(f'jaxdistill.{name}', run_name='__main__', alter_sys=True)
        return 0
    print('jaxdistill: train several JAX/Flax models together.\n\nCommands:')
    for name, what in COMMANDS.items():
        print(f'  python -m jaxdistill.{name:<10} {what}')
    print('\nEach takes --help; `python -m jaxdistill NAME ...` runs one too.')
    return 0


if __name__ == '__main__':
    sys.exit(main())
