"""`python -m jaxdistill`: lists the command-line tools."""

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


def main() -> int:
    print('jaxdistill: train several JAX/Flax models together.\n\nCommands:')
    for name, what in COMMANDS.items():
        print(f'  python -m jaxdistill.{name:<10} {what}')
    print('\nEach takes --help.')
    return 0


if __name__ == '__main__':
    sys.exit(main())
