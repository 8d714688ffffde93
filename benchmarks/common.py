"""What every benchmark records beside its figures: command, date, machine."""

import datetime
import json
import os
import pathlib
import platform
import shlex
import subprocess
import sys

RESULTS = pathlib.Path(__file__).resolve().parent / 'results'
REPO = RESULTS.parents[1]


# The instruction-set extensions that decide which kernels XLA's CPU backend
# emits (vector width, bfloat16/int8 dot products): the same program can round
# differently on hosts that differ in them.
_CPU_ISA = (
    'avx',
    'avx2',
    'fma',
    'avx512f',
    'avx512bw',
    'avx512vl',
    'avx512_vnni',
    'avx512_bf16',
    'avx512_fp16',
    'amx_tile',
    'amx_bf16',
    'amx_int8',
)


def cpu(cpuinfo: str = '/proc/cpuinfo') -> dict:
    """The host CPU's model and SIMD extensions ({} where /proc/cpuinfo is absent)."""
    try:
        with open(cpuinfo) as f:
            text = f.read()
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(':')
        if not sep:
            if fields:
                break  # The first processor's block is enough.
            continue
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get('flags', '').split())
    return {
        'cpu_model': fields.get('model name', ''),
        'cpu_isa': [f for f in _CPU_ISA if f in flags],
    }


def machine() -> dict:
    """A description of the machine and software that produced a result."""
    import jax  # pylint: disable=g-import-not-at-top

    info = {
        'platform': platform.platform(),
        'processor': platform.processor() or platform.machine(),
        **cpu(),
        'cpu_count': os.cpu_count(),
        'python': platform.python_version(),
        'jax': jax.__version__,
        'backend': jax.default_backend(),
        'devices': [str(d) for d in jax.devices()],
        # The accelerator's model ('NVIDIA H100 80GB HBM3', 'cpu'): timings from
        # two kinds of GPU are not comparable.
        'device_kind': sorted({d.device_kind for d in jax.devices()}),
        # Fake CPU devices, compiler options: they change what was measured.
        'xla_flags': os.environ.get('XLA_FLAGS', ''),
    }
    try:
        import flax  # pylint: disable=g-import-not-at-top

        info['flax'] = flax.__version__
    except ImportError:
        pass
    return info


def provenance() -> dict:
    """{'command', 'date', 'machine'} of the running benchmark."""
    return {
        # Quoted for a shell: an argument with spaces or brackets
        # (`--note`, a tuple override) pastes back as one argument.
        'command': shlex.join(
            ['python', os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]
        ),
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec='seconds'
        ),
        'machine': machine(),
    }


def xla_flops(compiled) -> float:
    """XLA's FLOP count of a compiled computation (`jit(f).lower(...).compile()`)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost['flops'])


def add_tag(parser) -> None:
    """`--tag T`: the result is NAME_T.json / NAME_T.png, so a run at another
    size or on another machine does not replace the committed NAME.json."""
    parser.add_argument(
        '--tag', default='', help='write NAME_TAG.json/.png instead of NAME.*'
    )


def stem(name: str, args) -> str:
    """NAME, or NAME_TAG with `--tag` (`add_tag`)."""
    tag = getattr(args, 'tag', '')
    return f'{name}_{tag}' if tag else name


def write_result(name: str, result: dict) -> pathlib.Path:
    """Writes benchmarks/results/NAME.json with command, date and machine.
    A `--quick` result (NAME ending in '_quick', git-ignored) says that it is
    a smoke run whose figures measure nothing."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {**provenance(), **result}
    if name.endswith('_quick'):
        record['smoke_run'] = (
            'written by --quick: the smallest size, to check that the script '
            'runs; its figures (times, fractions, accuracies) measure nothing.'
        )
    path = RESULTS / f'{name}.json'
    path.write_text(json.dumps(record, indent=2) + '\n')
    print(f'wrote {path}')
    return path


def mt2st_data_overrides(data_dir) -> list[str]:
    """'key=path' overrides pointing configs/mt2st_sst2.py at the folder
    holding sst2/ and words/ (the similarity sets are scored, never trained)."""
    data = pathlib.Path(data_dir)
    return [
        f'data.sst2_dir={data / "sst2"}',
        f'data.corpus={data / "words" / "brown.txt.gz"}',
        f'data.similarity.ws353={data / "words" / "wordsim353.tsv"}',
        f'data.similarity.simlex={data / "words" / "simlex999.txt"}',
    ]


def train_cmd(config: str, workdir, *overrides) -> list[str]:
    """`python -m jaxdistill.train --config CONFIG --workdir DIR OVERRIDES...`."""
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


def run_until_logged(
    cmd, step, sig, *, env=None, timeout: float = 600
) -> tuple[int, str]:
    """Runs `cmd` in the repository; sends `sig` once it logs step `step`
    (None: lets it run to the end). -> (return code, its output)."""
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if step is not None and line.startswith(f'step {step}/'):
            proc.send_signal(sig)
            break
    rest, _ = proc.communicate(timeout=timeout)
    return proc.returncode, ''.join(lines) + rest
