"""The command-line entry points' restart with huge pages for malloc."""

import os
import subprocess
import sys

import pytest

from jaxdistill import hostmem

MADVISE = {'glibc': (2, 36), 'thp': 'madvise'}

linux_only = pytest.mark.skipif(
    sys.platform != 'linux', reason='GLIBC_TUNABLES exists only on Linux with glibc'
)


@linux_only
def test_env_adds_the_tunable_and_keeps_the_users_tunables():
    env = hostmem.huge_pages_env({'PATH': '/bin'}, **MADVISE)
    assert env == {'PATH': '/bin', 'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'}
    env = hostmem.huge_pages_env(
        {'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'}, **MADVISE
    )
    assert env['GLIBC_TUNABLES'] == 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'
    # The benchmark's arm without: the tunable removed, the others kept.
    off = hostmem.with_huge_pages(env, False)
    assert off['GLIBC_TUNABLES'] == 'glibc.malloc.arena_max=2'


@pytest.mark.parametrize(
    'environ,kwargs',
    [
        ({'JAXDISTILL_HUGE_PAGES': '0'}, MADVISE),  # opted out
        ({'JAXDISTILL_HUGE_PAGES': 'off'}, MADVISE),
        ({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}, MADVISE),  # user's choice
        ({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'}, MADVISE),  # restarted already
        ({}, {'glibc': (2, 31), 'thp': 'madvise'}),  # glibc without the tunable
        ({}, {'glibc': (2, 36), 'thp': 'always'}),  # huge pages on anyway
        ({}, {'glibc': (2, 36), 'thp': 'never'}),  # and off for everyone
    ],
)
def test_env_is_none_when_a_restart_would_change_nothing(environ, kwargs):
    assert hostmem.huge_pages_env(environ, **kwargs) is None


def test_thp_mode_reads_the_bracketed_choice(tmp_path):
    path = tmp_path / 'enabled'
    path.write_text('always [madvise] never\n')
    assert hostmem.thp_mode(str(path)) == 'madvise'
    path.write_text('[always] madvise never\n')
    assert hostmem.thp_mode(str(path)) == 'always'
    assert hostmem.thp_mode(str(tmp_path / 'missing')) is None


def test_restart_sets_the_tunable_once_and_keeps_arguments():
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ('GLIBC_TUNABLES', hostmem.OPT_OUT)
    }
    expected = hostmem.huge_pages_env(environ)
    code = (
        'import os, sys\n'
        'from jaxdistill import hostmem\n'
        'print("start", flush=True)\n'
        'hostmem.reexec_with_huge_pages()\n'
        'print(os.environ.get("GLIBC_TUNABLES", ""), sys.argv[1:])\n'
    )
    out = subprocess.run(
        [sys.executable, '-c', code, 'a', '--b=1'],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.splitlines()
    if expected is None:
        # Nothing to do on this machine (THP mode, glibc): no restart.
        assert out == ['start', " ['a', '--b=1']"]
    else:
        # Started twice (the output before the restart is flushed, not lost),
        # then ran on with the tunable and the same arguments.
        assert out == [
            'start',
            'start',
            "glibc.malloc.hugetlb=1 ['a', '--b=1']",
        ]


def test_no_restart_where_the_command_cannot_be_started_again(monkeypatch):
    """A script read from stdin (`python - < script.py`) is consumed: started
    again, nothing after the call would run. So would an interactive one."""
    execs = []
    monkeypatch.setattr(hostmem.os, 'execve', lambda *a: execs.append(a))
    monkeypatch.setattr(hostmem, 'huge_pages_env', lambda: {'GLIBC_TUNABLES': 'x'})
    for argv0 in ('-', ''):
        monkeypatch.setattr(hostmem.sys, 'argv', [argv0])
        hostmem.reexec_with_huge_pages()
    assert not execs
    monkeypatch.setattr(hostmem.sys, 'argv', ['script.py'])
    hostmem.reexec_with_huge_pages()
    assert len(execs) == 1
