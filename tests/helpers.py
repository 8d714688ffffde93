"""Running the CLIs as real subprocesses, and reading their checkpoints."""

import os
import socket
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
    return [
        sys.executable,
        '-m',
        'jaxdistill.train',
        '--config',
        config,
        '--workdir',
        str(workdir),
        *overrides,
    ]


def run(cmd, timeout=300, **env_extra):
    return subprocess.run(
        cmd,
        cwd=REPO,
        env=env(**env_extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def final_params(workdir) -> tuple[int, dict]:
    """(step, {path: np.ndarray}) of the newest checkpoint's parameters."""
    import jax  # pylint: disable=g-import-not-at-top

    from jaxdistill import checkpoint  # pylint: disable=g-import-not-at-top

    step, path = checkpoint.latest_step_dir(str(pathlib.Path(workdir) / 'checkpoints'))
    params = checkpoint.read_state(path)['params']
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return step, {jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves}


def start_two_processes(workdir, *overrides, config=CONFIG):
    """Starts training on 2 local processes x 4 CPU devices (gloo); -> the
    two Popen objects (stdout piped, stderr into it)."""
    with socket.socket() as s:
        s.bind(('localhost', 0))
        port = s.getsockname()[1]
    return [
        subprocess.Popen(
            train_cmd(workdir, *overrides, config=config),
            cwd=REPO,
            env=env(
                devices=4,
                JAX_COORDINATOR_ADDRESS=f'localhost:{port}',
                JAX_NUM_PROCESSES=2,
                JAX_PROCESS_ID=i,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]


def run_two_processes(workdir, *overrides, config=CONFIG, timeout=900):
    """Trains on 2 local processes x 4 CPU devices (gloo); returns their outputs.

    Asserts both processes exit 0.
    """
    procs = start_two_processes(workdir, *overrides, config=config)
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    return outs
