"""Running the CLIs as real subprocesses, and reading their checkpoints."""

import os
import socket
import pathlib
import subprocess
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = str(REPO / 'configs' / 'translate_synthetic.py') + ':runlocal'


def xla_flags(devices: int) -> str:
    """XLA_FLAGS for the tests: `devices` fake CPU devices, and LLVM's
    optimisation off. The tests compile far more than they compute (many small
    steps, each traced and compiled a few times), and most of a CPU compile
    is LLVM optimising the code: at level 0 the in-process tests of
    test_codistill.py and test_train_step.py took 112-117 s instead of
    166-182 s on 2 cores (`-n 2`). The runs still compare exactly with each
    other: every process of the suite compiles with the same flags."""
    return (
        f'--xla_force_host_platform_device_count={devices} '
        '--xla_backend_optimization_level=0'
    )


def env(devices=8, **extra):
    e = dict(os.environ)
    e['XLA_FLAGS'] = xla_flags(devices)
    e['JAX_PLATFORMS'] = 'cpu'
    e['TF_CPP_MIN_LOG_LEVEL'] = '3'
    e.update({k: str(v) for k, v in extra.items()})
    return e


def train_cmd(workdir, *overrides, config=CONFIG):
    """`python -m jaxdistill.train`; `config=None`: without --config (a
    resume by the workdir alone)."""
    return [
        sys.executable,
        '-m',
        'jaxdistill.train',
        *(('--config', config) if config else ()),
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


def signal_at_step(cmd, step: int, sig, **env_extra) -> tuple[int, str]:
    """Runs `cmd`, sends it `sig` once it logs `step {step}/`; -> (its exit
    status, its output: stdout and stderr)."""
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env(**env_extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(f'step {step}/'):
            proc.send_signal(sig)
            break
    rest, _ = proc.communicate(timeout=120)
    return proc.returncode, ''.join(seen) + rest


def final_params(workdir) -> tuple[int, dict]:
    """(step, {path: np.ndarray}) of the newest checkpoint's parameters."""
    import jax  # pylint: disable=g-import-not-at-top

    from jaxdistill import checkpoint  # pylint: disable=g-import-not-at-top

    step, path = checkpoint.latest_step_dir(str(pathlib.Path(workdir) / 'checkpoints'))
    params = checkpoint.read_state(path)['params']
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return step, {jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves}


def start_two_processes(
    workdir, *overrides, config=CONFIG, each=((), ()), devices=(4, 4)
):
    """Starts training on 2 local processes x 4 CPU devices (gloo); -> the
    two Popen objects (stdout piped, stderr into it). `each`: arguments for
    process 0 and process 1 alone (a --workdir there replaces `workdir`);
    `devices`: each one's number of CPU devices."""
    with socket.socket() as s:
        s.bind(('localhost', 0))
        port = s.getsockname()[1]
    return [
        subprocess.Popen(
            train_cmd(workdir, *overrides, *each[i], config=config),
            cwd=REPO,
            env=env(
                devices=devices[i],
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


def np_log_softmax(x) -> np.ndarray:
    """log softmax over the last axis in float64 numpy: expected values
    computed apart from the library's own losses."""
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))
