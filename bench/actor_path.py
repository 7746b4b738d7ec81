"""Where an actor call's time goes: W11's loop (20,000 calls of a no-op method, then all
fetched) for about a second a round, with the driver's and the actor worker's CPU per call
(from /proc), then W10's sync call. Run it on two checkouts in turn (PYTHONPATH=...) to
compare them in the same minutes: bench/README.md, "The lane, fourth part".

    python bench/actor_path.py [--rounds N]
"""
import argparse
import os
import time

import shmray as ray


@ray.remote
class Actor:
    def f(self):
        return None

    def pid(self):
        return os.getpid()


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median(values):
    return sorted(values)[len(values) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    ray.init(num_cpus=2)
    a = Actor.remote()
    actor_pid = ray.get(a.pid.remote())
    ray.get([a.f.remote() for _ in range(3000)])  # warm
    rates, driver, worker = [], [], []
    for _ in range(rounds):
        start, cpu0, actor0, n = time.perf_counter(), time.process_time(), cpu_seconds(actor_pid), 0
        while time.perf_counter() - start < 1.0:
            ray.get([a.f.remote() for _ in range(20_000)])
            n += 20_000
        rates.append(n / (time.perf_counter() - start))
        driver.append((time.process_time() - cpu0) / n * 1e6)
        worker.append((cpu_seconds(actor_pid) - actor0) / n * 1e6)
    sync = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(2000):
            ray.get(a.f.remote())
        sync.append((time.perf_counter() - start) / 2000 * 1e6)
    print(f"W11 {median(rates):,.0f} calls/s  driver {median(driver):.2f} us/call  "
          f"actor worker {median(worker):.2f} us/call  W10 {median(sync):.1f} us")
    ray.shutdown()


if __name__ == "__main__":
    main()
