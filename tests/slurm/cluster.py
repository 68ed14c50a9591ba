"""A throw-away one-node Slurm cluster for tests, and a helper that runs a
Snakemake workflow on it through the repository's slurm profile.

    from tests.slurm.cluster import slurm_cluster, run_under_slurm

    with slurm_cluster(tmp_path / "slurm") as cluster:
        run = run_under_slurm(cluster, workdir, snakefile, timeout=120)

``slurm_cluster`` runs ``install.sh`` (apt-get, only when packages are
missing) and ``start.sh`` (munged, mariadbd, slurmdbd, slurmctld, slurmd), and
always runs ``stop.sh`` afterwards, which stops every daemon by its recorded
pid.  When the cluster cannot be started it raises :class:`SlurmUnavailable`
with the reason; tests turn that into a skip (or, with ``PRI_REQUIRE_SLURM=1``,
a failure).

``run_under_slurm`` builds the profile the test uses from
``workflow/profiles/slurm/config.yaml`` itself: it loads the real profile and
overrides only what has to differ on the test cluster (partition, account,
sizes that fit the test node, a short status-poll interval), so the real
profile's keys and per-rule resources are what gets tested.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import yaml

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
REAL_PROFILE = REPO_ROOT / "workflow" / "profiles" / "slurm" / "config.yaml"

INSTALL_SH = HERE / "install.sh"
START_SH = HERE / "start.sh"
STOP_SH = HERE / "stop.sh"

# Sizes that fit the test node (a couple of CPUs and GB).
TEST_MEM_MB = 500
TEST_RUNTIME_MIN = 10
TEST_CPUS_PER_TASK = 1
# slurm-init-seconds-before-status-checks: the plugin polls job states every
# `init` seconds while no job is active, resets to `init` after a poll that
# saw a job finish and adds 10 s after a poll that saw none finish.  A short
# test job takes ~6 s here, so with 2 a round of jobs is noticed after ~12-14 s,
# and snakemake's shutdown (which sleeps out the current interval) stays short.
TEST_INIT_SECONDS = 2

DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")


class SlurmUnavailable(RuntimeError):
    """The local test cluster could not be installed or started."""


@dataclass
class SlurmCluster:
    state_dir: Path
    log_dir: Path
    cluster: str
    partition: str
    account: str
    host: str
    cpus: int
    mem_mb: int
    env: dict[str, str]
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def logs(self) -> dict[str, Path]:
        return {p.stem: p for p in sorted(self.log_dir.glob("*.log"))}


@dataclass
class SlurmRun:
    """Outcome of :func:`run_under_slurm`."""

    proc: subprocess.CompletedProcess
    log: str  # snakemake's stdout + stderr
    log_path: Path
    profile_dir: Path
    job_ids: list[str]  # Slurm job ids in submission order
    sacct_rows: list[dict[str, str]]  # one per job id (sacct -X)
    sbatch_calls: list[str]  # the "sbatch ..." command lines (needs --verbose)
    timed_out: bool = False

    def rows_for_rule(self, rule: str) -> list[dict[str, str]]:
        """sacct rows of the jobs of `rule` (the plugin sets --comment rule_<name>)."""
        return [
            r
            for r in self.sacct_rows
            if r.get("Comment") == f"rule_{rule}"
            or r.get("Comment", "").startswith(f"rule_{rule}_wildcards_")
        ]

    def sbatch_calls_for_rule(self, rule: str) -> list[str]:
        return [c for c in self.sbatch_calls if f"--comment rule_{rule}" in c]


# --------------------------------------------------------------------- reaping
# start.sh exits once the daemons run, so they are re-parented to the nearest
# "child subreaper", normally pid 1.  Where pid 1 does not reap (some
# containers), killed daemons would stay behind as zombies.  Making this
# process a subreaper while the cluster runs lets us reap them ourselves.
_PR_SET_CHILD_SUBREAPER = 36


def _set_subreaper(on: bool) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _zombie_children() -> list[int]:
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces/parentheses
        rest = stat[stat.rfind(")") + 2 :].split()
        if len(rest) >= 2 and rest[0] == "Z" and int(rest[1]) == me:
            out.append(int(entry))
    return out


def _reap(exclude: set[int]) -> None:
    for pid in _zombie_children():
        if pid in exclude:
            continue
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def _child_pids() -> set[int]:
    me = os.getpid()
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            rest = stat[stat.rfind(")") + 2 :].split()
            if len(rest) >= 2 and int(rest[1]) == me:
                pids.add(int(entry))
    return pids


# --------------------------------------------------------------------- cluster
def _run_script(args: Sequence[str], timeout: float, log_path: Path) -> subprocess.CompletedProcess:
    with open(log_path, "ab") as log:
        return subprocess.run(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )


def _tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def _read_env(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            env[k.strip()] = v.strip()
    return env


def _read_pids(path: Path) -> dict[str, int]:
    pids = {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                pids[parts[0]] = int(parts[1])
    return pids


@contextlib.contextmanager
def slurm_cluster(
    state_dir: str | os.PathLike | None = None,
    *,
    install: bool = True,
    start_timeout: float = 300,
) -> Iterator[SlurmCluster]:
    """Start the local test cluster, yield a :class:`SlurmCluster`, stop it.

    Raises :class:`SlurmUnavailable` (with the reason and the tail of the
    start log) when it cannot be installed or started.  stop.sh always runs,
    also when starting failed half-way or the body raised.
    """
    if not sys.platform.startswith("linux"):
        raise SlurmUnavailable(f"needs Linux, this is {sys.platform}")
    if os.geteuid() != 0:
        raise SlurmUnavailable("needs root (writes /etc/slurm and starts system daemons)")

    own_tmp = None
    if state_dir is None:
        own_tmp = tempfile.mkdtemp(prefix="pri-slurm-")
        state_dir = own_tmp
    state = Path(state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    script_log = state / "scripts.log"

    children_before = _child_pids()
    subreaper = _set_subreaper(True)
    try:
        try:
            if install:
                p = _run_script(["bash", str(INSTALL_SH)], start_timeout, script_log)
                if p.returncode != 0:
                    raise SlurmUnavailable(
                        f"install.sh failed (exit {p.returncode}):\n{_tail(script_log)}"
                    )
            p = _run_script(["bash", str(START_SH), str(state)], start_timeout, script_log)
        except subprocess.TimeoutExpired as e:
            raise SlurmUnavailable(f"{e.cmd} timed out after {e.timeout}s:\n{_tail(script_log)}")
        if p.returncode != 0:
            raise SlurmUnavailable(f"start.sh failed (exit {p.returncode}):\n{_tail(script_log)}")
        env = _read_env(state / "cluster.env")
        cluster = SlurmCluster(
            state_dir=state,
            log_dir=Path(env["LOG_DIR"]),
            cluster=env["CLUSTER"],
            partition=env["PARTITION"],
            account=env["ACCOUNT"],
            host=env["HOST"],
            cpus=int(env["CPUS"]),
            mem_mb=int(env["MEM_MB"]),
            env=env,
            pids=_read_pids(state / "pids"),
        )
        yield cluster
    finally:
        try:
            _run_script(["bash", str(STOP_SH), str(state)], 120, script_log)
        finally:
            _reap(exclude=children_before)
            if subreaper:
                _set_subreaper(False)
            if own_tmp is not None:
                shutil.rmtree(own_tmp, ignore_errors=True)


# ------------------------------------------------------------------- profiles
def _deep_merge(base: dict, over: Mapping) -> dict:
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            _deep_merge(base[k], v)
        elif v is None:
            base.pop(k, None)
        else:
            base[k] = copy.deepcopy(v)
    return base


def _clamp(value: Any, limit: int) -> Any:
    return min(value, limit) if isinstance(value, int) and not isinstance(value, bool) else limit


def build_test_profile(
    cluster: SlurmCluster,
    overrides: Mapping | None = None,
    real_profile: Path = REAL_PROFILE,
) -> dict:
    """The real slurm profile, adapted to the test cluster.

    Only these keys change: the partition and account (the test cluster's),
    mem_mb/runtime/cpus_per_task (clamped to fit the test node, also per rule),
    the status-poll interval, jobs/retries/latency-wait (fail fast), and Slurm
    logs are kept for inspection.  Everything else (executor, gpu requests,
    slurm_extra, status command, ...) is taken from the real profile as is.
    `overrides` is deep-merged last (a value of None deletes a key).
    """
    profile = yaml.safe_load(Path(real_profile).read_text())
    dr = profile.setdefault("default-resources", {})
    dr["slurm_partition"] = cluster.partition
    dr["slurm_account"] = cluster.account
    dr["mem_mb"] = _clamp(dr.get("mem_mb"), TEST_MEM_MB)
    dr["runtime"] = _clamp(dr.get("runtime"), TEST_RUNTIME_MIN)
    for rule, res in (profile.get("set-resources") or {}).items():
        if "slurm_partition" in res:
            res["slurm_partition"] = cluster.partition
        if "slurm_account" in res:
            res["slurm_account"] = cluster.account
        if "mem_mb" in res:
            res["mem_mb"] = _clamp(res["mem_mb"], TEST_MEM_MB)
        if "runtime" in res:
            res["runtime"] = _clamp(res["runtime"], TEST_RUNTIME_MIN)
        if "cpus_per_task" in res:
            res["cpus_per_task"] = _clamp(res["cpus_per_task"], min(TEST_CPUS_PER_TASK, cluster.cpus))
    profile["slurm-init-seconds-before-status-checks"] = TEST_INIT_SECONDS
    profile["slurm-keep-successful-logs"] = True
    profile["jobs"] = 10
    profile["retries"] = 0
    profile["latency-wait"] = 5
    if overrides:
        _deep_merge(profile, overrides)
    return profile


def write_profile(profile: Mapping, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(dict(profile), sort_keys=False))
    return directory


# ------------------------------------------------------------------------ run
_JOBID_RE = re.compile(r"has been submitted with SLURM jobid (\d+)")
_SBATCH_RE = re.compile(r"sbatch call: (sbatch .*?)(?: --wrap=|$)", re.M)
SACCT_FIELDS = (
    "JobID",
    "JobName",
    "State",
    "ExitCode",
    "Partition",
    "Account",
    "NodeList",
    "ReqTRES",
    "AllocTRES",
    "Comment",
)


def sacct_rows(job_ids: Sequence[str]) -> list[dict[str, str]]:
    if not job_ids:
        return []
    out = subprocess.run(
        [
            "sacct",
            "-X",
            "-P",
            "-n",
            "--clusters",
            "all",
            "-j",
            ",".join(job_ids),
            "-o",
            ",".join(SACCT_FIELDS),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) == len(SACCT_FIELDS):
            rows.append(dict(zip(SACCT_FIELDS, parts)))
    return rows


def _cancel_run_jobs(log: str) -> None:
    ids = _JOBID_RE.findall(log)
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30, check=False)


def run_under_slurm(
    cluster: SlurmCluster,
    workdir: str | os.PathLike,
    snakefile: str | os.PathLike,
    extra_args: Sequence[str] = (),
    profile_overrides: Mapping | None = None,
    timeout: float = 120,
) -> SlurmRun:
    """Run `snakemake --profile <test profile>` on the cluster, under a hard timeout.

    The profile is :func:`build_test_profile` written to ``<workdir>/.test-profile``.
    snakemake runs with ``--verbose`` so the plugin's "sbatch call:" lines end
    up in the log.  On timeout the whole snakemake process group is killed and
    its Slurm jobs cancelled; ``timed_out`` is set and ``proc.returncode`` is
    -9.  Returns job ids, sacct rows and the sbatch calls.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    profile_dir = write_profile(
        build_test_profile(cluster, profile_overrides), workdir / ".test-profile"
    )
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        str(profile_dir),
        "--snakefile",
        str(Path(snakefile).resolve()),
        "--directory",
        str(workdir),
        "--verbose",
        *extra_args,
    ]
    env = dict(os.environ)
    # snakemake and the jobs it submits must find the venv's executables.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("SLURM_CONF", None)  # /etc/slurm/slurm.conf is the cluster's config
    log_path = workdir / "snakemake-slurm.log"
    timed_out = False
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            returncode = proc.wait()
        except BaseException:  # interrupted (Ctrl-C): leave no snakemake behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    log = log_path.read_text(errors="replace")
    if timed_out:
        _cancel_run_jobs(log)
        log += f"\n[run_under_slurm] killed after {timeout}s timeout\n"
    job_ids = _JOBID_RE.findall(log)
    rows: list[dict[str, str]] = []
    for _ in range(10):  # accounting records can trail the job end a little
        try:
            rows = sacct_rows(job_ids)
        except (subprocess.SubprocessError, OSError):
            rows = []
        if len(rows) >= len(set(job_ids)):
            break
        time.sleep(0.5)
    completed = subprocess.CompletedProcess(cmd, returncode, stdout=log, stderr="")
    return SlurmRun(
        proc=completed,
        log=log,
        log_path=log_path,
        profile_dir=profile_dir,
        job_ids=job_ids,
        sacct_rows=rows,
        sbatch_calls=[m.strip() for m in _SBATCH_RE.findall(log)],
        timed_out=timed_out,
    )
