"""Process-pool peer: Python's concurrent.futures.ProcessPoolExecutor (fork start method).
Same measurements as bench_process_pool, printed as one JSON line:
  startup_ms        construct a 2-worker pool and get a result from each worker
  seq_p50/p99_us    submit(plus_one, x).result() one after another, 1 worker
  inflight_jobs_s   20,000 trivial jobs submitted at once, 2 workers
  map1_items_s      map(plus_one, range(20000), chunksize=1), 2 workers
  map1000_items_s   map(plus_one, range(2000000), chunksize=1000), 2 workers
  echo_1mib_ms / echo_64mib_ms   a bytes argument returned as the result (median)
    python3 bench/peers/process_pool_python.py
"""
import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import time


def plus_one(x):
    return x + 1


def echo(b):
    return b


def pid(_):
    time.sleep(0.01)  # both workers must answer: neither can take both jobs
    return os.getpid()


def main():
    ctx = mp.get_context("fork")
    out = {"runtime": "python ProcessPoolExecutor"}

    t0 = time.perf_counter()
    with cf.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        pids = set(ex.map(pid, range(2)))
        out["startup_ms"] = (time.perf_counter() - t0) * 1000 - 10  # minus the 10 ms sleep
        assert len(pids) == 2, pids

    with cf.ProcessPoolExecutor(1, mp_context=ctx) as ex:
        for i in range(500):
            ex.submit(plus_one, i).result()
        samples = []
        x = 0
        for _ in range(5000):
            t = time.perf_counter_ns()
            x = ex.submit(plus_one, x).result()
            samples.append(time.perf_counter_ns() - t)
        samples.sort()
        out["seq_p50_us"] = samples[len(samples) // 2] / 1000
        out["seq_p99_us"] = samples[len(samples) * 99 // 100] / 1000

    with cf.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        list(ex.map(plus_one, range(1000)))  # warm up
        n = 20000
        t = time.perf_counter()
        futures = [ex.submit(plus_one, i) for i in range(n)]
        for f in futures:
            f.result()
        out["inflight_jobs_s"] = n / (time.perf_counter() - t)

        t = time.perf_counter()
        r = list(ex.map(plus_one, range(20000), chunksize=1))
        out["map1_items_s"] = 20000 / (time.perf_counter() - t)
        assert r[-1] == 20000
        t = time.perf_counter()
        r = list(ex.map(plus_one, range(2000000), chunksize=1000))
        out["map1000_items_s"] = 2000000 / (time.perf_counter() - t)
        assert r[-1] == 2000000

        for size, reps, key in ((1 << 20, 51, "echo_1mib_ms"), (64 << 20, 7, "echo_64mib_ms")):
            payload = os.urandom(size)
            times = []
            for _ in range(reps):
                t = time.perf_counter()
                back = ex.submit(echo, payload).result()
                times.append((time.perf_counter() - t) * 1000)
                assert len(back) == size
            times.sort()
            out[key] = times[len(times) // 2]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
