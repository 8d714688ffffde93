"""Running the CLIs as real subprocesses, and reading their checkpoints."""
import os
import pathlib
import subprocess
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = str(REPO / 'configs' / 'translate_synthetic.py') + ':runlocal'


def env(devices=8, **extra):
    e = dict(os.environ)
    e['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
    e['JAX_PLATFORMS'] = 'cpu'
    e['TF_CPP_MIN_LOG_LEVEL'] = '3'
    e.update({k: str(v) for k, v in extra.items()})
    return e


def train_cmd(workdir, *overrides, config=CONFIG):
    return [sys.executable, '-m', 'jaxdistill.train', '--config', config,
            '--workdir', str(workdir), *overrides]


def run(cmd, timeout=300, **env_extra):
    return subprocess.run(cmd, cwd=REPO, env=env(**env_extra),
                          capture_output=True, text=True, timeout=timeout)


def final_params(workdir) -> dict:
    """{path: np.ndarray} of the newest checkpoint's parameters."""
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    ckpts = pathlib.Path(workdir) / 'checkpoints'
    step = max(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
    with ocp.StandardCheckpointer() as c:
        state = c.restore((ckpts / str(step) / 'state').resolve())
    flat = {}

    def walk(prefix, node):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f'{prefix}/{k}', v)
        else:
            flat[prefix] = np.asarray(node)

    walk('', state['params'])
    return step, flat
