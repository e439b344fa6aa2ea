"""-k prefork (gunicorn's -k sync, and -k gthread with --threads): a master, N workers.

Flow
    master   cli.py has loaded the app and bound the listeners already. The master
             forks --workers workers, then loops, never reading a client byte:
               sleep()               select() on the wakeup pipe (signals, SIGCHLD) and
                                     one heartbeat pipe per worker, 1 s at most
               handle_signals()      act on what the handlers recorded, in order
               reap_workers()        waitpid(-1, WNOHANG): workers, and any orphan when
                                     we run as PID 1 in a container
               kill_stuck_workers()  SIGKILL a worker silent longer than --timeout
               manage_workers()      spawn or retire workers until the count is right
    worker   runs the iterative model's loop (the threaded one when --threads > 1,
             the evloop one under -k evloop, the default) on the inherited listeners;
             the kernel hands each connection to one of them. A watchdog thread
             (watchdog.py) writes a heartbeat byte to the master every second or so,
             except while a request has been inside the app too long; it also recycles
             the worker after --max-requests and ends it when the master is gone.

--reload (development): the master also polls the app's .py files each second and
reloads as on HUP when one changes (reloader.py).

Signals (gunicorn's): TERM graceful stop, INT/QUIT fast stop, HUP reload (new workers
import the app afresh; the old ones finish what they have, then stop), TTIN/TTOU one
worker more/less, USR1 reopen log files. Handlers append to a deque; the loop acts.

Lesson: a fixed pool of processes serves many clients, and a stuck or crashed one is
replaced. What breaks it: more slow requests than workers (sync); a worker that fails
to boot (bad code after a HUP) stops the master with exit status 3 rather than looping.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import select
import signal
import time

from ..context import Stats
from ..proctitle import describe, set_title
from ..starting import STOP_SIGNALS, pass_held_signals, stop_booting
from .base import Model
from .evloop import EventLoopModel
from .iterative import IterativeModel
from .reloader import CodeWatcher, app_roots
from .threaded import ThreadedModel
from .watchdog import Watchdog, import_app

WORKER_BOOT_ERROR = 3  # a worker's exit status when the app cannot be loaded
HALT_BOOT_ERROR = 3  # the master's exit status when workers keep failing to boot
MAX_BOOT_FAILURES = 5  # consecutive boot failures before the master gives up
KILL_AFTER = 2.0  # fast stop: seconds between SIGQUIT and SIGKILL
MASTER_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
                  signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2,
                  signal.SIGCHLD)


@dataclasses.dataclass
class Worker:
    pid: int
    number: int  # 1..workers, as its process title shows it (`wizgy: worker 2`)
    slot: int | None
    heartbeat: int  # read end of the worker's heartbeat pipe; -1 once at EOF
    generation: int  # bumped by each HUP
    last_beat: float
    booted: bool = False  # sent its first heartbeat
    retiring: bool = False  # asked to stop
    killed: bool = False  # sent SIGKILL


class PreforkModel(Model):
    name = "prefork"
    multiprocess = True

    @classmethod
    def flags(cls, settings) -> tuple[bool, bool]:
        return settings.worker_threads > 1, True

    @classmethod
    def slots(cls, settings) -> int:
        return 2 * settings.workers + 16  # room for a HUP's second set, and for TTIN

    def run(self) -> int:
        self.workers: dict[int, Worker] = {}
        self.signals: collections.deque[int] = collections.deque()
        self.target = self.ctx.settings.workers
        self.generation = 0
        self.boot_failures = 0
        self.exit_code = 0
        self.event = getattr(self.ctx, "event", lambda what, **fields: None)
        settings = self.ctx.settings
        self.watcher = CodeWatcher(app_roots(settings)) if settings.reload else None
        if self.watcher:
            self.log.info("Reloading when any of %d .py files under %s changes",
                          len(self.watcher.mtimes), ", ".join(self.watcher.roots))
        self.install_signals()
        try:
            while self.stop is None:
                self.manage_workers()
                self.sleep()
                self.handle_signals()
                self.reap_workers()
                self.kill_stuck_workers()
                if self.watcher and (changed := self.watcher.changed()):
                    self.log.info("Code changed: %s", ", ".join(changed[:5]) +
                                  (f" and {len(changed) - 5} more" if len(changed) > 5 else ""))
                    self.handle_hup()
            self.stop_workers()
        finally:
            self.kill_all(signal.SIGKILL)
            self.wait_for_killed()
        return self.exit_code

    # signals: the handler records, the loop acts ------------------------------------
    def install_signals(self) -> None:
        signal.set_wakeup_fd(self.wakeup_w, warn_on_full_buffer=False)
        for signum in MASTER_SIGNALS:
            signal.signal(signum, self.record_signal)
        pass_held_signals()

    def record_signal(self, signum, frame) -> None:
        if signum != signal.SIGCHLD:
            self.signals.append(signum)

    def handle_signals(self) -> None:
        while self.signals:
            signum = self.signals.popleft()
            name = signal.Signals(signum).name[3:].lower()
            self.log.info("Handling signal: %s", name)
            self.event("signal received", signal=signal.Signals(signum).name)
            getattr(self, f"handle_{name}")()

    def handle_term(self) -> None:
        self.stop = self.stop or "graceful"

    def handle_int(self) -> None:
        self.stop = "fast"

    handle_quit = handle_int

    def handle_hup(self) -> None:
        """Reload: a new generation of workers, importing the app afresh; the old ones
        are retired once the new ones run (manage_workers)."""
        self.generation += 1
        self.log.info("Reloading: starting %d workers with a fresh import of %s",
                      self.target, self.ctx.settings.app)

    def handle_ttin(self) -> None:
        self.target += 1

    def handle_ttou(self) -> None:
        self.target = max(1, self.target - 1)

    def handle_usr1(self) -> None:
        self.ctx.logs.reopen()
        self.kill_all(signal.SIGUSR1)

    def handle_usr2(self) -> None:
        # gunicorn's binary upgrade (a new master beside this one); its default action
        # would kill this master and leave the workers orphaned.
        self.log.warning("USR2 (upgrade to a new master) is not supported: ignored; "
                         "HUP reloads the app")

    # the loop -------------------------------------------------------------------------
    def sleep(self) -> None:
        """Until a signal, a heartbeat, or a second passes."""
        pipes = {w.heartbeat: w for w in self.workers.values() if w.heartbeat >= 0}
        readable, _, _ = select.select([self.wakeup_r, *pipes], [], [], 1.0)
        now = time.monotonic()
        for fd in readable:
            if fd == self.wakeup_r:
                self.drain_wakeup()
            else:
                self.read_heartbeat(pipes[fd], now)

    def read_heartbeat(self, worker: Worker, now: float) -> None:
        try:
            data = os.read(worker.heartbeat, 512)
        except BlockingIOError:
            return
        if not data:  # the worker is gone; reap_workers closes the pipe
            os.close(worker.heartbeat)
            worker.heartbeat = -1
            return
        worker.last_beat = now
        if not worker.booted:
            worker.booted = True
            self.boot_failures = 0

    def manage_workers(self) -> None:
        """Spawn or retire workers until `target` of the newest generation run; retire
        older generations once the new one has booted (HUP)."""
        if self.boot_failures >= MAX_BOOT_FAILURES:
            self.log.error("Workers failed to boot %d times in a row: stopping",
                           self.boot_failures)
            self.exit_code = HALT_BOOT_ERROR
            self.stop = "fast"
            return
        serving = [w for w in self.workers.values() if not w.retiring]
        current = [w for w in serving if w.generation == self.generation]
        for _ in range(self.target - len(current)):
            self.spawn_worker()
        for worker in current[:max(0, len(current) - self.target)]:  # TTOU: oldest first
            self.retire_worker(worker)
        old = [w for w in serving if w.generation != self.generation]
        if old and len(current) >= self.target and all(w.booted for w in current):
            for worker in old:
                self.retire_worker(worker)

    def spawn_worker(self) -> None:
        slot = self.ctx.board.claim() if self.ctx.board else None
        taken = {worker.number for worker in self.workers.values()}
        number = next(n for n in range(1, len(taken) + 2) if n not in taken)
        heartbeat_r, heartbeat_w = os.pipe()
        signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                self.run_worker(slot, number, heartbeat_r, heartbeat_w)  # never returns
        except OSError as error:
            self.log.error("fork() failed: %s", error)
            self.ctx.stats.fork_failures += 1
            self.release(slot)
            os.close(heartbeat_r)
            return
        finally:
            os.close(heartbeat_w)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, MASTER_SIGNALS)
        os.set_blocking(heartbeat_r, False)
        self.workers[pid] = Worker(pid, number, slot, heartbeat_r, self.generation,
                                   time.monotonic())
        self.log.info("Booting worker with pid %d", pid)
        self.event("worker started", pid=pid)

    def retire_worker(self, worker: Worker) -> None:
        """Graceful: the worker finishes its requests, then exits."""
        worker.retiring = True
        self.kill_worker(worker.pid, signal.SIGTERM)

    def kill_worker(self, pid: int, signum: int) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass  # exited already; reap_workers will see it

    def kill_all(self, signum: int) -> None:
        for pid in list(self.workers):
            self.kill_worker(pid, signum)

    def kill_stuck_workers(self) -> None:
        timeout = self.ctx.settings.timeout
        if not timeout:
            return
        now = time.monotonic()
        for worker in self.workers.values():
            if not worker.killed and now - worker.last_beat > timeout:
                worker.killed = True
                self.log.critical("WORKER TIMEOUT (pid:%d): silent for %.1f s, killing it",
                                  worker.pid, now - worker.last_beat)
                self.kill_worker(worker.pid, signal.SIGKILL)

    def reap_workers(self) -> None:
        """Wait for every exited child: workers, and orphans handed to us as PID 1."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is not None:
                self.forget_worker(worker, status)
            else:  # an orphan (we are PID 1 or a subreaper), or the status process
                self.log.debug("Reaped process %d (not a worker)", pid)

    def wait_for_killed(self) -> None:
        for pid, worker in list(self.workers.items()):
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                continue
            del self.workers[pid]
            self.forget_worker(worker, status)
        self.reap_workers()

    def forget_worker(self, worker: Worker, status: int) -> None:
        if worker.heartbeat >= 0:
            os.close(worker.heartbeat)
        self.release(worker.slot)
        code = os.waitstatus_to_exitcode(status)
        described = f"signal {signal.Signals(-code).name}" if code < 0 else str(code)
        if code < 0 and not (worker.killed or worker.retiring or self.stop):
            # Not a signal of ours: the kernel's OOM killer, or an operator.
            self.log.error("Worker %d was killed by %s, not by the master (out of memory?)",
                           worker.pid, described)
        else:
            self.log.info("Worker %d exited with status %s", worker.pid, described)
        self.event("worker exited", pid=worker.pid, status=code)
        if code == WORKER_BOOT_ERROR and not worker.booted:
            self.boot_failures += 1

    def release(self, slot: int | None) -> None:
        if slot is not None:
            self.ctx.board.release(slot)

    def stop_workers(self) -> None:
        """TERM: workers finish in-flight requests within --graceful-timeout.
        INT/QUIT: they stop at once (SIGQUIT, then SIGKILL after KILL_AFTER seconds)."""
        graceful = self.stop == "graceful"
        self.stop_listening()  # new connections are refused now, in every worker too
        self.close_listeners()
        self.kill_all(signal.SIGTERM if graceful else signal.SIGQUIT)
        deadline = time.monotonic() + (self.ctx.settings.graceful_timeout if graceful
                                       else KILL_AFTER)
        while self.workers and time.monotonic() < deadline:
            self.sleep()
            self.reap_workers()
            if any(s in (signal.SIGINT, signal.SIGQUIT) for s in self.signals) and graceful:
                graceful = False  # a second, impatient signal: stop now
                self.kill_all(signal.SIGQUIT)
                deadline = min(deadline, time.monotonic() + KILL_AFTER)
            self.signals.clear()

    # worker ---------------------------------------------------------------------------
    def run_worker(self, slot: int | None, number: int, heartbeat_r: int, heartbeat_w: int):
        code = 0
        try:
            os.close(heartbeat_r)
            self.become_worker(slot)
            set_title(f"worker {number}", describe(self.ctx.settings))
            if self.generation:  # after a HUP: the code may have changed on disk
                try:
                    self.ctx.app = import_app(self.ctx.settings.app,
                                              app_roots(self.ctx.settings))
                except Exception:
                    self.log.exception("Worker %d failed to boot", os.getpid())
                    code = WORKER_BOOT_ERROR
                    return
            worker = self.worker_model()
            Watchdog(self.ctx, worker, heartbeat_w, os.getppid()).start()
            code = worker.run()
        except KeyboardInterrupt:
            pass
        except BaseException:
            code = 1
            self.log.exception("Worker %d failed", os.getpid())
        finally:
            os._exit(code)

    def become_worker(self, slot: int | None) -> None:
        """Drop the master's things: its wakeup pipe, other workers' heartbeat pipes and
        its signal handlers. The worker model installs TERM/INT/QUIT its own way."""
        signal.set_wakeup_fd(-1)
        os.close(self.wakeup_r)
        os.close(self.wakeup_w)
        for worker in self.workers.values():
            if worker.heartbeat >= 0:
                os.close(worker.heartbeat)
        for signum in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1,
                       signal.SIGUSR2):
            signal.signal(signum, signal.SIG_IGN)  # sent to the group: meant for the master
        for signum in STOP_SIGNALS:  # until the worker model installs its own: then
            signal.signal(signum, stop_booting)  # run_worker exits 0
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if slot is not None:
            self.ctx.stats = self.ctx.board.stats(slot)
            self.ctx.stats.pid = os.getpid()
        else:
            self.ctx.stats = Stats()  # the board is full: counters of our own
        signal.pthread_sigmask(signal.SIG_UNBLOCK, MASTER_SIGNALS)

    def worker_model(self) -> Model:
        settings = self.ctx.settings
        if settings.worker_threads > 1:
            self.ctx.settings = dataclasses.replace(settings, threads=settings.worker_threads)
            model = ThreadedModel
        elif settings.model == "evloop":
            model = EventLoopModel
        else:
            model = IterativeModel
        worker = model(self.ctx, self.listeners)
        worker.owns_listeners = False  # a retiring worker must not stop the others'
        return worker
