import { MARKER_VAR, WATCH_FD_VAR } from './hub-config.js';

/**
 * A small Python supervisor that runs JupyterHub as its child. It exists because the hub starts
 * the proxy, single-user servers and services in sessions of their own and does not always wait
 * for them: once the hub exits they are orphans, and where PID 1 does not reap (containers,
 * microVMs) they linger as zombies. As a child subreaper this process adopts and reaps every
 * descendant, and exits only when none is left, so "the hub's pid has exited" means "the whole
 * tree is gone".
 *
 * It also watches fd 3, a pipe whose other end the test process holds. EOF means the test
 * process died, however it died, and then everything is killed.
 */
export const REAPER_PY = String.raw`
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading

PR_SET_CHILD_SUBREAPER = 36
ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

marker = ('${MARKER_VAR}=' + os.environ['${MARKER_VAR}']).encode()
watch_fd = int(os.environ.pop('${WATCH_FD_VAR}', '-1'))
me = os.getpid()


def ours():
    """Processes carrying this hub's marker, plus anything adopted by this reaper."""
    found = set()
    for entry in os.listdir('/proc'):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        try:
            with open('/proc/%d/stat' % pid, 'rb') as f:
                stat = f.read()
            fields = stat[stat.rindex(b')') + 2:].split()
            if fields[0] == b'Z':
                continue
            if int(fields[1]) == me:
                found.add(pid)
                continue
            with open('/proc/%d/environ' % pid, 'rb') as f:
                if marker in f.read().split(b'\0'):
                    found.add(pid)
        except (OSError, ValueError, IndexError):
            pass
    return found


def sweep(sig):
    for pid in ours():
        try:
            os.kill(pid, sig)
        except OSError:
            pass


# Reaped below with os.wait(), never through the Popen object, so its pid is read once here.
hub_pid = subprocess.Popen(sys.argv[1:]).pid
hub_done = False


def forward(signum, frame):
    if hub_done:
        return
    try:
        os.kill(hub_pid, signum)
    except OSError:
        pass


signal.signal(signal.SIGTERM, forward)
signal.signal(signal.SIGINT, forward)
signal.signal(signal.SIGALRM, lambda signum, frame: sweep(signal.SIGKILL))


orphaned = threading.Event()


def watch():
    try:
        while os.read(watch_fd, 4096):
            pass
    except OSError:
        pass
    orphaned.set()
    sweep(signal.SIGKILL)


if watch_fd >= 0:
    threading.Thread(target=watch, daemon=True).start()

status = 1
while True:
    try:
        pid, code = os.wait()
    except ChildProcessError:
        break
    if pid == hub_pid:
        hub_done = True
        status = os.waitstatus_to_exitcode(code)
        # The hub is gone; whatever it left behind gets a short grace period, then SIGKILL.
        sweep(signal.SIGTERM)
        signal.alarm(3)
if orphaned.is_set():
    # Nobody is left to call stop(), which would otherwise remove the hub's temp dir.
    shutil.rmtree(os.path.dirname(os.path.abspath(__file__)), ignore_errors=True)
sys.exit(status if status >= 0 else 128 - status)
`;
