"""Offload round trip peer: asyncio loop.run_in_executor with a one-thread
ThreadPoolExecutor. Same measurements as bench_offload: sequential p50/p99/mean, then 64
in flight.
    python3 bench/peers/offload_python.py [sequential=20000] [in_flight_jobs=100000]
"""
import asyncio
import concurrent.futures
import json
import sys
import time


def plus_one(x):
    return x + 1


async def main(sequential, jobs, in_flight=64):
    loop = asyncio.get_running_loop()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    for i in range(1000):  # warm up
        await loop.run_in_executor(pool, plus_one, i)
    samples = []
    x = 0
    for _ in range(sequential):
        t0 = time.perf_counter_ns()
        x = await loop.run_in_executor(pool, plus_one, x)
        samples.append(time.perf_counter_ns() - t0)
    samples.sort()

    per = jobs // in_flight

    async def chain():
        v = 0
        for _ in range(per):
            v = await loop.run_in_executor(pool, plus_one, v)

    t0 = time.perf_counter()
    await asyncio.gather(*(chain() for _ in range(in_flight)))
    secs = time.perf_counter() - t0
    pool.shutdown()
    print(json.dumps({
        "runtime": "python run_in_executor",
        "p50_us": samples[len(samples) // 2] / 1000,
        "p99_us": samples[len(samples) * 99 // 100] / 1000,
        "mean_us": sum(samples) / len(samples) / 1000,
        "jobs_per_s": per * in_flight / secs,
    }))


if __name__ == "__main__":
    seq = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100000
    asyncio.run(main(seq, n))
