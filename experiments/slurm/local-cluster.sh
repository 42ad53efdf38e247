#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, to test the workflow's cluster path (experiments/profiles/slurm)
# against a real scheduler: used by CI (.ci/run) and by anyone who wants to try the SLURM executor on a
# workstation. Debian/Ubuntu, as root, no systemd needed (a container will do).
#
#   experiments/slurm/local-cluster.sh up      install (if missing) and start munged, slurmctld, slurmd; wait
#                                              until the node is idle. Idempotent: a running cluster is left as is.
#   experiments/slurm/local-cluster.sh down    stop the daemons `up` started, by the PIDs it recorded
#   experiments/slurm/local-cluster.sh status  the daemons' PIDs and `sinfo`
#
# The cluster: one node named after `hostname -s`, all its CPUs, its memory less 1 GB (ours: room for the
# daemons and the OS; a job asking for more than RealMemory is rejected at submission), and two partitions:
# cpu (the default) and gpu. The node declares one GPU whose device file is /dev/null, so jobs submitted with
# --gpus=1 are scheduled on a machine without a GPU (and must train on the CPU: run with --config device=cpu,
# or let device=auto find no GPU). No accounting database: sacct fails ("accounting storage is disabled"), so
# the profile's status command is squeue, which sees finished jobs for MinJobAge seconds.
#
# Files: /etc/slurm/slurm.conf and /etc/slurm/gres.conf (written by `up`, which refuses to replace files it did
# not write), and $QREPRO_SLURM_DIR (default /tmp/qrepro-slurm): controller state, slurmd spool, daemon logs
# and the PIDs `down` stops. Measured on a 2-core Debian 12 container: installing the packages takes about 10 s
# after `apt-get update`, and the node is idle about 1 s after slurmd starts.
set -euo pipefail

STATE_DIR=${QREPRO_SLURM_DIR:-/tmp/qrepro-slurm}
CONF=/etc/slurm/slurm.conf
GRES_CONF=/etc/slurm/gres.conf
MARKER="# Written by qrepro experiments/slurm/local-cluster.sh"
# Debian 12 packages: SLURM 22.05, munge 0.5; the slurm-wlm metapackage would pull 43 packages nobody uses here.
PACKAGES=(slurmctld slurmd slurm-client munge)
DAEMONS=(munged slurmctld slurmd)
# Seconds to wait for the node to become idle; ours (it takes about 1 s).
IDLE_TIMEOUT=60
# Memory kept back from SLURM for the OS and the daemons, in MB; ours.
HEADROOM_MB=1024

die() { echo "local-cluster: $*" >&2; exit 1; }

pid_alive() { [[ -s "$STATE_DIR/$1.pid" ]] && kill -0 "$(cat "$STATE_DIR/$1.pid")" 2>/dev/null; }

install_packages() {
    local missing=()
    for cmd in slurmctld slurmd sbatch munged; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    [[ ${#missing[@]} -eq 0 ]] && return
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install ${PACKAGES[*]}"
    echo "local-cluster: installing ${PACKAGES[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
}

write_config() {
    local host node real_memory
    host=$(hostname -s)
    # slurmctld and slurmd find each other by this name.
    getent hosts "$host" >/dev/null || echo "127.0.0.1 $host" >> /etc/hosts
    for file in "$CONF" "$GRES_CONF"; do
        if [[ -e "$file" ]] && ! grep -qF "$MARKER" "$file"; then
            die "$file exists and was not written by this script; not replacing it"
        fi
    done
    # The node's hardware as slurmd sees it (CPUs, sockets, cores, threads), less the memory headroom.
    node=$(slurmd -C | head -1)
    real_memory=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<< "$node")
    node=$(sed -e "s/^NodeName=[^ ]*/NodeName=$host/" -e "s/RealMemory=[0-9]*/RealMemory=$((real_memory - HEADROOM_MB))/" \
        <<< "$node")
    mkdir -p /etc/slurm "$STATE_DIR"/{state,spool,log}
    cat > "$CONF" <<CONF
$MARKER; \`local-cluster.sh down\` stops it.
ClusterName=qrepro
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
# No cgroups: containers rarely have them writable, and one test node needs no confinement.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
# A finished job stays visible to squeue this long (seconds): the executor plugin's squeue status check needs
# at least 3x its --slurm-init-seconds-before-status-checks, and checks at most every 180 s. SLURM's default.
MinJobAge=300
# A node that was down (e.g. slurmd restarted) returns to service as soon as it registers.
ReturnToService=2
$node Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host Default=NO MaxTime=INFINITE State=UP
CONF
    cat > "$GRES_CONF" <<CONF
$MARKER
# A GPU that is not there: lets --gpus=1 jobs be scheduled on this CPU-only node.
NodeName=$host Name=gpu File=/dev/null
CONF
}

start_munged() {
    # A munged this script did not start (a system service) serves as well; `down` leaves it running.
    if [[ -s /run/munge/munged.pid ]] && kill -0 "$(cat /run/munge/munged.pid)" 2>/dev/null; then
        return
    fi
    mkdir -p /run/munge
    chown munge:munge /run/munge
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    cp /run/munge/munged.pid "$STATE_DIR/munged.pid"
}

wait_idle() {
    local host state
    host=$(hostname -s)
    for _ in $(seq "$IDLE_TIMEOUT"); do
        state=$(sinfo -h -n "$host" -p cpu -o %t 2>/dev/null || true)
        [[ "$state" == idle || "$state" == mix || "$state" == alloc ]] && return
        sleep 1
    done
    die "node $host is not idle after ${IDLE_TIMEOUT} s (state: '${state}'); logs in $STATE_DIR/log"
}

up() {
    [[ $EUID -eq 0 ]] || die "run as root (it installs packages and starts daemons)"
    if pid_alive slurmctld && pid_alive slurmd; then
        wait_idle
        echo "local-cluster: already up"
        sinfo
        return
    fi
    install_packages
    write_config
    pid_alive munged || start_munged
    # Each daemon forks into the background and writes its PID file (slurm.conf).
    pid_alive slurmctld || slurmctld
    pid_alive slurmd || slurmd
    wait_idle
    echo "local-cluster: up (state, logs and PIDs in $STATE_DIR)"
    sinfo
}

down() {
    local name pid
    # Reverse start order: slurmd, slurmctld, munged.
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        name=${DAEMONS[i]}
        [[ -s "$STATE_DIR/$name.pid" ]] || continue
        pid=$(cat "$STATE_DIR/$name.pid")
        if kill "$pid" 2>/dev/null; then
            for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
            echo "local-cluster: stopped $name ($pid)"
        fi
        rm -f "$STATE_DIR/$name.pid"
    done
}

status() {
    for name in "${DAEMONS[@]}"; do
        if pid_alive "$name"; then
            echo "$name: running ($(cat "$STATE_DIR/$name.pid"))"
        elif [[ $name == munged && -s /run/munge/munged.pid ]] && kill -0 "$(cat /run/munge/munged.pid)" 2>/dev/null; then
            echo "munged: running ($(cat /run/munge/munged.pid), not started by this script)"
        else
            echo "$name: stopped"
        fi
    done
    pid_alive slurmctld && sinfo
    return 0
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
